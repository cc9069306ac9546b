//! A control plane fed by the Kubernetes controller: bundles pushed over mutual
//! TLS go through the same loader and publisher as a directory, and only the
//! controller may push.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use palisade_ca::TrustDomain;
use palisade_policy::distribute::{
    controller_id, push, push_source, serve, PolicyEvent, ProxyStatus, Published, Publisher, PushError, PushParams,
    ServeParams,
};
use palisade_policy::{load_canonical, load_with_files, BundleFiles};

use crate::support::{control_plane, eventually, shop, Ca, Proxy, FRONTEND};

const SECOND: Duration = Duration::from_secs(1);

/// A control plane started with only the mesh settings, waiting for pushes.
struct Pushed {
    addr: String,
    events: Arc<Mutex<Vec<PolicyEvent>>>,
    published: tokio::sync::watch::Receiver<Arc<Published>>,
    _stop: oneshot::Sender<()>,
}

fn td() -> TrustDomain {
    TrustDomain::new("shop.example").unwrap()
}

async fn start(ca: &Ca) -> Pushed {
    let files = BundleFiles::from_iter([("mesh.yaml".to_owned(), "trustDomain: shop.example\n".to_owned())]);
    let (files, bundle) = load_canonical(&files).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let (publisher, published) = Publisher::new(Published::awaiting(files, bundle), move |event: &PolicyEvent| {
        sink.lock().unwrap().push(event.clone());
    });
    let push = push_source(Arc::new(tokio::sync::Mutex::new(publisher)), &td()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let params = ServeParams {
        listener,
        resolver: ca.svid(&control_plane()),
        trust: ca.trust(),
        published: published.clone(),
        status: ProxyStatus::new(),
        push: Some(push),
    };
    tokio::spawn(serve(params, async move {
        let _ = stopped.await;
    }));
    Pushed {
        addr,
        events,
        published,
        _stop: stop,
    }
}

fn params(ca: &Ca, cp: &Pushed, as_id: &str) -> PushParams {
    PushParams {
        addr: cp.addr.clone(),
        trust: ca.trust(),
        resolver: ca.svid(as_id),
        trust_domain: td(),
    }
}

fn controller() -> String {
    controller_id(&td()).unwrap().to_string()
}

fn shop_files() -> BundleFiles {
    load_with_files(shop()).unwrap().0
}

#[tokio::test]
async fn a_pushed_bundle_is_published_like_the_same_directory() {
    let ca = Ca::new();
    let cp = start(&ca).await;
    let mut frontend = Proxy::of_addr(&ca, &cp.addr, FRONTEND);
    // The proxy is connected before the first push...
    let connected = eventually(2 * SECOND, || frontend.follower.state.borrow().connected.then_some(())).await;
    assert!(connected.is_some(), "the proxy connects");

    let pushed = push(&params(&ca, &cp, &controller()), &shop_files()).await.unwrap();
    let (canonical, _) = load_canonical(&shop_files()).unwrap();
    assert_eq!(pushed.version, 1);
    assert!(pushed.changed);
    assert_eq!(pushed.digest, cp.published.borrow().digest.to_string());
    assert_eq!(
        cp.published.borrow().files,
        canonical,
        "the canonical form is what is served"
    );
    // ...and the first snapshot it gets is the pushed one: the waiting version 0
    // (mesh settings only, deny all) is never sent.
    let first = frontend.next(2 * SECOND).await.expect("the pushed version");
    assert_eq!(first.version(), 1);
    assert!(!first.load().unwrap().policies().is_empty());

    let again = push(&params(&ca, &cp, &controller()), &canonical).await.unwrap();
    assert_eq!(
        (again.version, again.changed),
        (1, false),
        "the same bundle changes nothing"
    );
}

#[tokio::test]
async fn an_invalid_push_is_refused_with_its_problems_and_changes_nothing() {
    let ca = Ca::new();
    let cp = start(&ca).await;
    push(&params(&ca, &cp, &controller()), &shop_files()).await.unwrap();
    let mut broken = shop_files();
    broken.insert(
        "policies/web/egress/broken.cedar",
        "permit (principal, action, resource);",
    );
    let error = push(&params(&ca, &cp, &controller()), &broken).await.unwrap_err();
    let PushError::Refused(status) = &error else {
        panic!("{error}")
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("policies/web/egress/broken.cedar"), "{error}");
    assert!(status.message().contains("version 1 stays"), "{error}");
    assert_eq!(cp.published.borrow().version, 1);
    let rejected = cp
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PolicyEvent::Rejected { .. }))
        .count();
    assert_eq!(rejected, 1, "the refusal is in the policy audit trail");
}

#[tokio::test]
async fn only_the_controller_may_push() {
    let ca = Ca::new();
    let cp = start(&ca).await;
    let error = push(&params(&ca, &cp, FRONTEND), &shop_files()).await.unwrap_err();
    let PushError::Refused(status) = &error else {
        panic!("{error}")
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{error}");
    assert!(status.message().contains("palisade-controller"), "{error}");
    assert_eq!(cp.published.borrow().version, 0, "nothing was published");
}
