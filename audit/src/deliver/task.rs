//! The delivery task: queue → batches → the audit service, through the spool
//! whenever the service is away or slow.
//!
//! **Where a record is.** In the queue; in `buffer` (taken from the queue, not
//! yet sent); in the batch in flight; or in the spool. The order of one sender's
//! records is: the batch in flight, then `buffer`, then the spool, then the queue.
//! Two rules keep it:
//!
//! - `buffer` fills only while the spool is empty and the service is (or is
//!   being) reached; the next batch comes from `buffer` first, then the spool.
//! - Records go to the spool only behind everything older: the first record that
//!   must be spooled while a batch from `buffer` is in flight first writes that
//!   batch (all of it or none) and `buffer` to the spool. The batch is then both in
//!   flight and the spool's first frames; confirmed, those frames are skipped.
//!
//! **Never blocking the senders.** While a batch is in flight, and while
//! waiting to reconnect, the task keeps taking records from the queue: into
//! `buffer` while there is room, else into the spool. The queue fills only if the
//! spool's disk cannot keep up.
//!
//! **Exactly once.** A batch leaves `buffer` or the spool only when the service
//! confirms it. After a failure the same records (same ids) are sent again;
//! the service drops any it already stored (a lost answer). A record the service
//! refuses as invalid (it names its index) is set aside and counted as dropped;
//! the rest are sent again.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use palisade_ca::client::SvidPeer;

use super::link::{self, Unsent};
use super::metrics::{Counters, DropReason};
use super::spool::{frame_size, Extent, Refusal, Spool};
use crate::proto::v1 as pb;
use crate::proto::v1::audit_log_client::AuditLogClient;

/// The first wait before reconnecting after a failed attempt; it doubles up to
/// [`MAX_BACKOFF`], each wait jittered down by up to half.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Everything the task works with.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) rx: mpsc::Receiver<pb::Record>,
    pub(crate) spool: Spool,
    pub(crate) spool_path: PathBuf,
    pub(crate) counters: Arc<Counters>,
    pub(crate) endpoint: Endpoint,
    pub(crate) peer: SvidPeer,
    pub(crate) batch_max: usize,
    pub(crate) batch_bytes: u64,
}

/// The batch in flight, when it came from `buffer`.
#[derive(Debug)]
struct InFlight {
    records: Vec<pb::Record>,
    /// Where it also is in the spool (its first frames), once spooled.
    spooled: Option<Extent>,
}

/// The task's state.
#[derive(Debug)]
struct Task {
    d: Delivery,
    /// The queue still has senders.
    open: bool,
    client: Option<AuditLogClient<Channel>>,
    /// Connected or connecting: records may wait in `buffer`.
    buffering: bool,
    /// How long to wait before the next connection attempt.
    backoff: Duration,
    /// The outage has been logged.
    outage_logged: bool,
    buffer: VecDeque<pb::Record>,
    buffer_bytes: u64,
    in_flight: Option<InFlight>,
    /// Ids the service refused, skipped when read back from the spool.
    refused: HashSet<String>,
    random: SystemRandom,
}

/// Runs until the queue is closed (every auditor dropped) and nothing is left in
/// memory: what the service has not confirmed by then is in the spool.
pub(crate) async fn run(delivery: Delivery) {
    let mut task = Task {
        d: delivery,
        open: true,
        client: None,
        buffering: false,
        backoff: Duration::ZERO,
        outage_logged: false,
        buffer: VecDeque::new(),
        buffer_bytes: 0,
        in_flight: None,
        refused: HashSet::new(),
        random: SystemRandom::new(),
    };
    task.gauge_spool();
    if !task.d.spool.is_empty() {
        tracing::info!(spool = %task.d.spool_path.display(), records = task.d.spool.frames(), "audit spool holds records from before; replaying them first");
    }
    task.run().await;
}

impl Task {
    async fn run(&mut self) {
        loop {
            let Some(client) = self.client.clone() else {
                if !self.open {
                    return;
                }
                self.reconnect().await;
                continue;
            };
            if self.buffer.is_empty() && self.d.spool.is_empty() {
                self.pull_ready();
                if self.buffer.is_empty() {
                    if !self.open {
                        return;
                    }
                    self.wait_for_record().await;
                    continue;
                }
            }
            if self.buffer.is_empty() {
                self.send_spooled(client).await;
            } else {
                self.pull_ready();
                self.send_buffered(client).await;
            }
        }
    }

    /// Waits for the next record while idle.
    async fn wait_for_record(&mut self) {
        match self.d.rx.recv().await {
            Some(record) => self.push_buffer(record),
            None => self.open = false,
        }
    }

    /// Moves what the queue holds now into `buffer`, up to one batch.
    fn pull_ready(&mut self) {
        while self.buffer.len() < self.d.batch_max && self.buffer_bytes < self.d.batch_bytes {
            match self.d.rx.try_recv() {
                Ok(record) => self.push_buffer(record),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.open = false;
                    return;
                }
            }
        }
    }

    fn push_buffer(&mut self, record: pb::Record) {
        self.buffer_bytes += frame_size(&record);
        self.buffer.push_back(record);
    }

    /// Sends the next batch from `buffer`.
    async fn send_buffered(&mut self, client: AuditLogClient<Channel>) {
        let records = self.take_batch();
        self.in_flight = Some(InFlight {
            records: records.clone(),
            spooled: None,
        });
        let result = self.while_draining(link::append(client, records)).await;
        let Some(batch) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(answer) => {
                self.confirmed(batch.records.len(), &answer);
                if let Some(extent) = batch.spooled {
                    self.advance(extent);
                }
            }
            Err(Unsent::Invalid { index, message }) if index < batch.records.len() => {
                let refused = batch.records.get(index).map(|r| r.id.clone());
                self.refuse(refused, &message);
                if batch.spooled.is_none() {
                    let rest = batch.records.into_iter().enumerate().filter(|(i, _)| *i != index);
                    self.unsend(rest.map(|(_, r)| r).collect());
                }
            }
            Err(Unsent::InvalidBatch(message)) => {
                self.refuse_batch(batch.records.len(), &message);
                if let Some(extent) = batch.spooled {
                    self.advance(extent);
                }
            }
            Err(Unsent::Failed(error) | Unsent::Invalid { message: error, .. }) => {
                if batch.spooled.is_none() {
                    self.unsend(batch.records);
                }
                self.lost(&error);
            }
        }
    }

    /// Sends the next batch from the spool.
    async fn send_spooled(&mut self, client: AuditLogClient<Channel>) {
        let read = match self.d.spool.read(self.d.batch_max, self.d.batch_bytes) {
            Ok(read) => read,
            Err(e) => return self.spool_unreadable(&e),
        };
        if read.undecodable > 0 {
            let why = "a spooled record could not be decoded";
            self.d.counters.dropped(DropReason::Invalid, read.undecodable, &why);
        }
        let records: Vec<pb::Record> = read
            .records
            .into_iter()
            .filter(|r| !self.refused.contains(&r.id))
            .collect();
        if records.is_empty() {
            return self.advance(read.extent);
        }
        let result = self.while_draining(link::append(client, records.clone())).await;
        match result {
            Ok(answer) => {
                self.confirmed(records.len(), &answer);
                self.advance(read.extent);
            }
            Err(Unsent::Invalid { index, message }) => self.refuse(records.get(index).map(|r| r.id.clone()), &message),
            Err(Unsent::InvalidBatch(message)) => {
                self.refuse_batch(records.len(), &message);
                self.advance(read.extent);
            }
            Err(Unsent::Failed(error)) => self.lost(&error),
        }
    }

    /// The first records of `buffer`: at most a batch, by count and bytes.
    fn take_batch(&mut self) -> Vec<pb::Record> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(record) = self.buffer.front() {
            let size = frame_size(record);
            if !batch.is_empty() && (batch.len() >= self.d.batch_max || bytes + size > self.d.batch_bytes) {
                break;
            }
            bytes += size;
            self.buffer_bytes = self.buffer_bytes.saturating_sub(size);
            batch.extend(self.buffer.pop_front());
        }
        batch
    }

    /// Puts unconfirmed records back at the front of `buffer`.
    fn unsend(&mut self, records: Vec<pb::Record>) {
        for record in records.into_iter().rev() {
            self.buffer_bytes += frame_size(&record);
            self.buffer.push_front(record);
        }
    }

    fn confirmed(&mut self, count: usize, answer: &pb::AppendResponse) {
        Counters::add(&self.d.counters.sent, u64::try_from(count).unwrap_or(u64::MAX));
        self.d.counters.spool_refusing.store(false, Ordering::Relaxed);
        self.backoff = Duration::ZERO;
        tracing::debug!(
            records = count,
            stored = answer.stored,
            duplicates = answer.duplicates,
            "audit batch confirmed"
        );
    }

    /// Sets aside the record `id` the service refused.
    fn refuse(&mut self, id: Option<String>, message: &str) {
        match id {
            Some(id) => {
                let why = format_args!("the audit service refused record `{id}`: {message}");
                self.d.counters.dropped(DropReason::Invalid, 1, &why);
                self.refused.insert(id);
            }
            None => self.lost(&format!("the audit service named a record not in the batch: {message}")),
        }
    }

    fn refuse_batch(&mut self, count: usize, message: &str) {
        let why = format_args!("the audit service refused a whole batch: {message}");
        self.d
            .counters
            .dropped(DropReason::Invalid, u64::try_from(count).unwrap_or(u64::MAX), &why);
    }

    /// Marks `extent` of the spool delivered.
    fn advance(&mut self, extent: Extent) {
        if let Err(e) = self.d.spool.advance(extent) {
            tracing::error!(spool = %self.d.spool_path.display(), error = %e, "cannot record the audit spool's replay offset; after a restart some records are sent again (the service drops the duplicates)");
        }
        if self.d.spool.is_empty() {
            self.refused.clear();
            self.d.counters.spool_refusing.store(false, Ordering::Relaxed);
        }
        self.gauge_spool();
    }

    fn spool_unreadable(&mut self, error: &std::io::Error) {
        let lost = match self.d.spool.discard_rest() {
            Ok(lost) => lost,
            Err(_) => self.d.spool.frames(),
        };
        let why = format_args!(
            "the audit spool `{}` cannot be read back ({error})",
            self.d.spool_path.display()
        );
        self.d.counters.dropped(DropReason::SpoolError, lost, &why);
        self.gauge_spool();
    }

    /// The connection failed: everything in memory goes to the spool.
    fn lost(&mut self, error: &str) {
        self.client = None;
        self.buffering = false;
        self.d.counters.connected.store(false, Ordering::Relaxed);
        if !self.outage_logged {
            tracing::warn!(addr = %self.d.peer.addr, %error, spool = %self.d.spool_path.display(), "lost the audit service; spooling audit records until it is back");
            self.outage_logged = true;
        } else {
            tracing::debug!(addr = %self.d.peer.addr, %error, "audit service still away");
        }
        if let Err(reason) = self.spill() {
            // Only when even an empty spool cannot take the records.
            let records = std::mem::take(&mut self.buffer);
            self.buffer_bytes = 0;
            let count = u64::try_from(records.len()).unwrap_or(u64::MAX);
            self.d.counters.dropped(
                reason,
                count,
                &"the audit service is away and the spool cannot take them",
            );
        }
    }

    /// Waits (draining the queue) and tries to connect once.
    async fn reconnect(&mut self) {
        if !self.backoff.is_zero() {
            let wait = self.jittered(self.backoff);
            self.wait_draining(wait).await;
            if !self.open {
                // Shutting down: what is left is in the spool already.
                return;
            }
        }
        self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        self.buffering = true;
        let connect = link::connect(self.d.endpoint.clone(), self.d.peer.clone());
        match self.while_draining(connect).await {
            Ok(client) => {
                self.client = Some(client);
                self.d.counters.connected.store(true, Ordering::Relaxed);
                let waiting = self.d.spool.frames();
                if self.outage_logged || waiting > 0 {
                    tracing::info!(addr = %self.d.peer.addr, spooled = waiting, "connected to the audit service; replaying the spool first");
                }
                self.outage_logged = false;
            }
            Err(error) => self.lost(&error),
        }
    }

    /// Runs `work`, taking records from the queue meanwhile.
    async fn while_draining<T>(&mut self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                record = self.d.rx.recv(), if self.open => match record {
                    Some(record) => self.take(record),
                    None => self.open = false,
                },
            }
        }
    }

    /// Waits `wait`, taking records from the queue meanwhile; stops early when
    /// the queue closes.
    async fn wait_draining(&mut self, wait: Duration) {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        while self.open {
            tokio::select! {
                biased;
                () = &mut sleep => return,
                record = self.d.rx.recv() => match record {
                    Some(record) => self.take(record),
                    None => self.open = false,
                },
            }
        }
    }

    /// A record taken from the queue while a batch is in flight or the service
    /// is away: into `buffer` if it may wait there, else into the spool behind
    /// everything older.
    fn take(&mut self, record: pb::Record) {
        let room = self.buffer.len() < self.d.batch_max && self.buffer_bytes < self.d.batch_bytes;
        if self.buffering && room && self.d.spool.is_empty() {
            return self.push_buffer(record);
        }
        match self.spill() {
            Ok(()) => self.spool_one(&record),
            Err(reason) => {
                let why = "the spool cannot take the batch in flight, so nothing newer may be spooled";
                self.d.counters.dropped(reason, 1, &why);
            }
        }
    }

    /// Moves the records in memory (the batch in flight, `buffer`) to the spool,
    /// which must be empty while they exist. `Err` when the batch in flight could
    /// not be spooled: nothing newer may be spooled then.
    fn spill(&mut self) -> Result<(), DropReason> {
        let unspooled = self.in_flight.as_ref().is_some_and(|b| b.spooled.is_none());
        if !unspooled && self.buffer.is_empty() {
            return Ok(());
        }
        if let Some(batch) = self.in_flight.as_mut().filter(|b| b.spooled.is_none()) {
            match self.d.spool.append_all(&batch.records) {
                Ok(extent) => {
                    batch.spooled = Some(extent);
                    Counters::add(&self.d.counters.spooled, extent.frames);
                }
                Err(refusal) => return Err(self.refused_by_spool(&refusal)),
            }
        }
        while let Some(record) = self.buffer.pop_front() {
            self.spool_one(&record);
        }
        self.buffer_bytes = 0;
        self.gauge_spool();
        Ok(())
    }

    fn spool_one(&mut self, record: &pb::Record) {
        match self.d.spool.append(record) {
            Ok(()) => {
                Counters::add(&self.d.counters.spooled, 1);
                self.d.counters.spool_refusing.store(false, Ordering::Relaxed);
            }
            Err(refusal) => {
                let reason = self.refused_by_spool(&refusal);
                let why = match &refusal {
                    Refusal::Full => format!("the spool `{}` is full", self.d.spool_path.display()),
                    Refusal::Io(e) => format!("cannot write the spool `{}`: {e}", self.d.spool_path.display()),
                };
                self.d.counters.dropped(reason, 1, &why);
            }
        }
        self.gauge_spool();
    }

    fn refused_by_spool(&self, refusal: &Refusal) -> DropReason {
        self.d.counters.spool_refusing.store(true, Ordering::Relaxed);
        match refusal {
            Refusal::Full => DropReason::SpoolFull,
            Refusal::Io(_) => DropReason::SpoolError,
        }
    }

    fn gauge_spool(&self) {
        self.d
            .counters
            .spool_bytes
            .store(self.d.spool.bytes(), Ordering::Relaxed);
        self.d
            .counters
            .spool_records
            .store(self.d.spool.frames(), Ordering::Relaxed);
    }

    /// `wait` less up to half of it, at random, so senders spread out.
    fn jittered(&self, wait: Duration) -> Duration {
        let mut byte = [0u8; 1];
        if self.random.fill(&mut byte).is_err() {
            return wait;
        }
        let [b] = byte;
        wait - wait / 2 * u32::from(b) / 255
    }
}
