//! Nothing acknowledged is lost: graceful restarts, SIGTERM and `kill -9`.

use confide_proto::{EntryKind, Reply, Request, Target};
use confide_testkit::raw::random_nonce;
use confide_testkit::{RawClient, ServerProcess, TestServer};
use std::collections::BTreeMap;

async fn history(client: &mut RawClient, room: confide_proto::RoomId) -> BTreeMap<u64, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut before = None;
    for _ in 0..10_000 {
        let Reply::History { entries, more } = client
            .ok(Request::History {
                room,
                before,
                limit: 1000,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        before = entries.first().map(|entry| entry.seq);
        for entry in entries {
            if let EntryKind::Message { body } = entry.kind {
                all.insert(entry.seq.0, body);
            }
        }
        if !more {
            break;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_restart() {
    let mut server = TestServer::start().await.unwrap();
    let mut alice = server.raw().await.unwrap();
    let token = alice.register("alice").await.unwrap();
    let lobby = alice.lobby().await.unwrap();
    let mut acked = BTreeMap::new();
    for n in 0..100 {
        let body = format!("keep {n}");
        let Reply::Sent { seq, .. } = alice
            .say(Target::Room(lobby), &body)
            .await
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        acked.insert(seq.0, body.into_bytes());
    }
    drop(alice);
    server.restart().await.unwrap();
    let mut alice = server.raw().await.unwrap();
    alice.ok(Request::Resume { token }).await.unwrap();
    let stored = history(&mut alice, lobby).await;
    assert_eq!(stored, acked);
    // Sequence numbers continue after the restart.
    let Reply::Sent { seq, .. } = alice
        .say(Target::Room(lobby), "after")
        .await
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(seq.0, acked.keys().last().unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = ServerProcess::start(dir.path()).unwrap();
    let mut alice = RawClient::connect(process.addr).await.unwrap();
    let token = alice.register("alice").await.unwrap();
    let lobby = alice.lobby().await.unwrap();
    // Pipeline many messages and kill the server while acknowledgements are arriving.
    let mut ids = Vec::new();
    for n in 0..3000 {
        let body = format!("crash test {n}").into_bytes();
        ids.push((
            alice
                .send_request(Request::Send {
                    target: Target::Room(lobby),
                    nonce: random_nonce(),
                    body: body.clone(),
                })
                .await
                .unwrap(),
            body,
        ));
    }
    let mut acked = BTreeMap::new();
    for (id, body) in ids {
        match alice.response(id).await {
            Ok(Ok(Reply::Sent { seq, .. })) => {
                acked.insert(seq.0, body);
                if acked.len() == 1000 {
                    process.kill9().unwrap();
                }
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break, // the connection died with the server
        }
    }
    assert!(acked.len() >= 1000, "only {} acknowledged", acked.len());
    let process = ServerProcess::start(dir.path()).unwrap();
    let mut alice = RawClient::connect(process.addr).await.unwrap();
    alice.ok(Request::Resume { token }).await.unwrap();
    let stored = history(&mut alice, lobby).await;
    for (seq, body) in &acked {
        assert_eq!(
            stored.get(seq),
            Some(body),
            "acknowledged message {seq} was lost"
        );
    }
    // Whatever was stored beyond the acknowledgements is a gapless prefix of what was sent.
    let seqs: Vec<u64> = stored.keys().copied().collect();
    assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1));
}

#[test]
fn sigterm_shuts_down_cleanly_and_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = ServerProcess::start(dir.path()).unwrap();
    let status = process.terminate().unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(process.data_dir().join("events.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.first().unwrap().contains(" start listen="));
    assert!(lines.last().unwrap().ends_with(" stop"));
}
