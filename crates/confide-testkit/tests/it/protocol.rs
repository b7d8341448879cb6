//! The version handshake and the request/response contract.

use confide_proto::{ClientHello, ErrorCode, PROTOCOL_VERSION, Reply, Request, ServerHelloResult};
use confide_testkit::{RawClient, TIMEOUT, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_reports_the_server_version_and_limits() {
    let server = TestServer::start().await.unwrap();
    let client = server.raw().await.unwrap();
    match client.hello {
        ServerHelloResult::Accepted(hello) => {
            assert_eq!(hello.version, PROTOCOL_VERSION);
            assert_eq!(hello.max_frame, 1 << 20);
            assert!(hello.software.starts_with("confide-server "));
        }
        other => panic!("rejected: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_client_is_told_to_upgrade() {
    let server = TestServer::start().await.unwrap();
    let mut hello = ClientHello::new("old-client");
    hello.version = 1;
    let mut client = RawClient::connect_with_hello(server.addr, hello)
        .await
        .unwrap();
    match &client.hello {
        ServerHelloResult::Rejected(rejected) => {
            assert_eq!(rejected.min_version, PROTOCOL_VERSION);
            assert!(
                rejected.message.contains("upgrade the client"),
                "{}",
                rejected.message
            );
        }
        other => panic!("accepted: {other:?}"),
    }
    assert_eq!(client.closed(TIMEOUT).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_client_gets_a_clear_version_error() {
    let server = TestServer::start().await.unwrap();
    let mut hello = ClientHello::new("future-client");
    hello.version = PROTOCOL_VERSION + 1;
    let mut client = RawClient::connect_with_hello(server.addr, hello)
        .await
        .unwrap();
    match &client.hello {
        ServerHelloResult::Rejected(rejected) => {
            assert_eq!(rejected.max_version, PROTOCOL_VERSION);
            assert!(
                rejected.message.contains("upgrade the server"),
                "{}",
                rejected.message
            );
        }
        other => panic!("accepted: {other:?}"),
    }
    assert_eq!(client.closed(TIMEOUT).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_need_a_login_and_every_request_is_answered_by_id() {
    let server = TestServer::start().await.unwrap();
    let mut client = server.raw().await.unwrap();
    let err = client
        .request(Request::ListRooms)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotLoggedIn);
    // Pipelined requests are answered with their own ids.
    let first = client.send_request(Request::Ping).await.unwrap();
    let second = client.send_request(Request::Ping).await.unwrap();
    assert!(matches!(
        client.response(first).await.unwrap(),
        Ok(Reply::Pong { .. })
    ));
    assert!(matches!(
        client.response(second).await.unwrap(),
        Ok(Reply::Pong { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_request_type_is_answered_and_the_connection_survives() {
    let server = TestServer::start().await.unwrap();
    let mut client = server.raw().await.unwrap();
    // A frame with request id 9 and a request discriminant this version lacks.
    client.write_bytes(&[0, 0, 0, 3, 9, 99, 0]).await.unwrap();
    match client.next_frame(TIMEOUT).await.unwrap() {
        Some(confide_proto::ServerFrame::Response { id, result }) => {
            assert_eq!(id.0, 9);
            assert_eq!(result.unwrap_err().code, ErrorCode::UnknownRequest);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        client.request(Request::Ping).await.unwrap(),
        Ok(Reply::Pong { .. })
    ));
}
