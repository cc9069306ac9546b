//! What a bundle means before any traffic flows: [`explain`] one request,
//! run the bundle's policy [`test`]s, and the [`mismatch`] graph of every
//! workload × service × method. All of them evaluate with the real engine.

pub mod explain;
pub mod mismatch;
pub mod test;
