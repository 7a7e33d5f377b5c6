//! A maintained etcd client library — the `etcd-client` crate (tonic) — against a `keel`
//! process: KV with options, transactions, etcd's errors, a watch stream with several
//! watchers, a watch catching up on 12 MB of history, and a lease kept alive over the
//! keep-alive stream.

mod common;

use std::time::Duration;

use common::Keel;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

/// Runs `test` on a tokio runtime with a deadline.
fn with_client(test: impl AsyncFnOnce(Client)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel = Keel::single(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = Client::connect([keel.endpoint.as_str()], None).await.expect("connects");
        tokio::time::timeout(Duration::from_secs(60), test(client)).await.expect("finishes in time");
    });
}

#[test]
fn kv_and_transactions() {
    with_client(async |mut client| {
        client.put("a", "1", None).await.unwrap();
        client.put("ab", "2", None).await.unwrap();
        let put = client.put("a", "3", Some(PutOptions::new().with_prev_key())).await.unwrap();
        assert_eq!(put.prev_key().unwrap().value(), b"1");
        let got = client
            .get(
                "a",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(etcd_client::SortTarget::Value, etcd_client::SortOrder::Descend),
                ),
            )
            .await
            .unwrap();
        let values: Vec<&[u8]> = got.kvs().iter().map(|kv| kv.value()).collect();
        assert_eq!(values, [b"3".as_slice(), b"2"]);
        assert_eq!(got.header().unwrap().revision(), 4);

        let cas = |expect: &'static str| {
            Txn::new()
                .when([Compare::value("a", CompareOp::Equal, expect)])
                .and_then([TxnOp::put("a", "4", None)])
                .or_else([TxnOp::get("a", None)])
        };
        assert!(client.txn(cas("3")).await.unwrap().succeeded());
        let failed = client.txn(cas("3")).await.unwrap();
        assert!(!failed.succeeded());
        match &failed.op_responses()[..] {
            [TxnOpResponse::Get(get)] => assert_eq!(get.kvs()[0].value(), b"4"),
            other => panic!("unexpected {other:?}"),
        }

        let future = client.get("a", Some(GetOptions::new().with_revision(99))).await.unwrap_err();
        assert!(future.to_string().contains("etcdserver: mvcc: required revision is a future revision"), "{future}");
        let deleted = client.delete("a", Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
        assert_eq!(deleted.deleted(), 2);
    });
}

#[test]
fn watch_stream_with_several_watchers() {
    with_client(async |mut client| {
        let mut stream = client.watch("w", Some(WatchOptions::new().with_prefix().with_prev_key())).await.unwrap();
        let created = stream.message().await.unwrap().unwrap();
        assert!(created.created() && created.watch_id() == 0);
        stream.watch("x", Some(WatchOptions::new().with_watch_id(7))).await.unwrap();
        let chosen = stream.message().await.unwrap().unwrap();
        assert!(chosen.created() && chosen.watch_id() == 7);

        client.put("w1", "a", None).await.unwrap();
        client.put("w1", "b", None).await.unwrap();
        client.put("x", "c", None).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let response = stream.message().await.unwrap().unwrap();
            for event in response.events() {
                let kv = event.kv().unwrap();
                let prev = event.prev_kv().map(|p| p.value().to_vec());
                seen.push((response.watch_id(), event.event_type(), kv.value().to_vec(), prev));
            }
        }
        assert_eq!(
            seen,
            [
                (0, EventType::Put, b"a".to_vec(), None),
                (0, EventType::Put, b"b".to_vec(), Some(b"a".to_vec())),
                (7, EventType::Put, b"c".to_vec(), None),
            ]
        );

        stream.request_progress().await.unwrap();
        let progress = stream.message().await.unwrap().unwrap();
        assert_eq!((progress.watch_id(), progress.header().unwrap().revision()), (-1, 4));
        stream.cancel(0).await.unwrap();
        let canceled = stream.message().await.unwrap().unwrap();
        assert!(canceled.canceled() && canceled.watch_id() == 0);
    });
}

/// A watcher starting at the first revision of 3,000 puts of 4 KiB gets them all, in batches
/// the client's default 4 MiB receive limit accepts (as one response, it refused them all).
#[test]
fn a_watch_catching_up_on_a_long_history_gets_it_in_batches() {
    with_client(async |mut client| {
        for i in 0..3000 {
            client.put(format!("h/{i:04}"), vec![b'v'; 4096], None).await.unwrap();
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(1);
        let mut stream = client.watch("h/", Some(options)).await.unwrap();
        assert!(stream.message().await.unwrap().unwrap().created());
        let (mut events, mut responses) = (0, 0);
        while events < 3000 {
            let response = stream.message().await.expect("a response the client accepts").unwrap();
            responses += 1;
            events += response.events().len();
        }
        assert_eq!(events, 3000);
        assert!(responses > 3, "{responses} responses");
    });
}

#[test]
fn lease_kept_alive_over_the_stream() {
    with_client(async |mut client| {
        let lease = client.lease_grant(60, None).await.unwrap();
        client.put("leased", "v", Some(PutOptions::new().with_lease(lease.id()))).await.unwrap();
        let (mut keeper, mut responses) = client.lease_keep_alive(lease.id()).await.unwrap();
        for _ in 0..3 {
            keeper.keep_alive().await.unwrap();
            let renewed = responses.message().await.unwrap().unwrap();
            assert_eq!((renewed.id(), renewed.ttl()), (lease.id(), 60));
        }
        let ttl = client
            .lease_time_to_live(lease.id(), Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!(ttl.keys(), [b"leased".to_vec()]);
        assert_eq!(client.leases().await.unwrap().leases().len(), 1);
        client.lease_revoke(lease.id()).await.unwrap();
        assert!(client.get("leased", None).await.unwrap().kvs().is_empty());
        keeper.keep_alive().await.unwrap();
        let gone = responses.message().await.unwrap().unwrap();
        assert_eq!(gone.ttl(), 0, "a revoked lease renews to TTL 0");
    });
}
