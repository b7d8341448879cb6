//! Registration, login, sessions and login rate limits.

use confide_proto::{ErrorCode, Password, Reply, Request};
use confide_testkit::TestServer;

fn register(name: &str, password: &str) -> Request {
    Request::Register {
        username: name.to_owned(),
        password: Password(password.to_owned()),
    }
}

fn login(name: &str, password: &str) -> Request {
    Request::Login {
        username: name.to_owned(),
        password: Password(password.to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usernames_are_unique_ignoring_case_and_normalization() {
    let server = TestServer::start().await.unwrap();
    let mut first = server.raw().await.unwrap();
    let reply = first
        .ok(register("Ren\u{e9}e", "long password"))
        .await
        .unwrap();
    match reply {
        Reply::LoggedIn {
            username, token, ..
        } => {
            assert_eq!(username.as_str(), "Ren\u{e9}e");
            assert_eq!(token.0.len(), 32);
        }
        other => panic!("unexpected {other:?}"),
    }
    for clash in ["REN\u{c9}E", "rene\u{301}e"] {
        let mut other = server.raw().await.unwrap();
        let err = other
            .request(register(clash, "long password"))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::UsernameTaken, "{clash}");
        assert!(err.message.contains("taken"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_passwords_get_clear_errors() {
    let server = TestServer::start().await.unwrap();
    let mut client = server.raw().await.unwrap();
    for (name, needle) in [
        ("ab", "3 to 32"),
        ("has space", "' '"),
        ("_under", "start with"),
        ("x/y", "'/'"),
    ] {
        let err = client
            .request(register(name, "long password"))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidUsername, "{name}");
        assert!(err.message.contains(needle), "{name}: {}", err.message);
    }
    let err = client
        .request(register("carol", "short"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::WeakPassword);
    assert!(err.message.contains("at least 8"));
    // Nothing was created by the failed attempts.
    client.ok(register("carol", "long password")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_look_the_same() {
    let server = TestServer::start().await.unwrap();
    server
        .raw()
        .await
        .unwrap()
        .ok(register("alice", "right password"))
        .await
        .unwrap();
    let mut client = server.raw().await.unwrap();
    let wrong = client
        .request(login("alice", "wrong password"))
        .await
        .unwrap()
        .unwrap_err();
    let unknown = client
        .request(login("nobody", "wrong password"))
        .await
        .unwrap()
        .unwrap_err();
    let invalid = client
        .request(login("??", "wrong password"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, invalid);
    assert_eq!(wrong.code, ErrorCode::InvalidCredentials);
    // Case and normalization do not matter when logging in.
    assert!(matches!(
        client.ok(login("ALICE", "right password")).await.unwrap(),
        Reply::LoggedIn { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_account() {
    let server = TestServer::start_with(|config| config.limits.login_failures_per_account = 3)
        .await
        .unwrap();
    server
        .raw()
        .await
        .unwrap()
        .ok(register("alice", "right password"))
        .await
        .unwrap();
    let mut client = server.raw().await.unwrap();
    for _ in 0..3 {
        let err = client
            .request(login("alice", "wrong password"))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidCredentials);
    }
    // Now even the right password is refused until the window passes.
    let err = client
        .request(login("alice", "right password"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RateLimited);
    assert!(err.message.contains("try again in"), "{}", err.message);
    // Other accounts are unaffected.
    assert!(matches!(
        client
            .ok(register("bob", "another password"))
            .await
            .unwrap(),
        Reply::LoggedIn { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_rate_limited_per_address() {
    let server = TestServer::start_with(|config| config.limits.login_attempts_per_address = 4)
        .await
        .unwrap();
    let mut client = server.raw().await.unwrap();
    for index in 0..4 {
        let err = client
            .request(login(&format!("user{index}"), "whatever1"))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidCredentials);
    }
    let err = client
        .request(login("user9", "whatever1"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RateLimited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_resumes_until_logout() {
    let mut server = TestServer::start().await.unwrap();
    let token = server.raw().await.unwrap().register("alice").await.unwrap();
    // The token survives a restart of the server.
    server.restart().await.unwrap();
    let mut again = server.raw().await.unwrap();
    match again
        .ok(Request::Resume {
            token: token.clone(),
        })
        .await
        .unwrap()
    {
        Reply::LoggedIn { username, .. } => assert_eq!(username.as_str(), "alice"),
        other => panic!("unexpected {other:?}"),
    }
    let err = again
        .request(Request::Resume {
            token: token.clone(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyLoggedIn);
    assert!(matches!(
        again.ok(Request::Logout).await.unwrap(),
        Reply::Ok
    ));
    let mut after = server.raw().await.unwrap();
    let err = after
        .request(Request::Resume { token })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidSession);
    let err = after
        .request(Request::Resume {
            token: confide_proto::SessionToken(vec![1; 32]),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidSession);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_stored_as_argon2id_hashes_only() {
    let mut server = TestServer::start().await.unwrap();
    server
        .raw()
        .await
        .unwrap()
        .ok(register("alice", "canary-password-4711"))
        .await
        .unwrap();
    server.stop().await.unwrap();
    for path in confide_testkit::files_under(server.data_dir()) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes
                .windows(20)
                .any(|window| window == b"canary-password-4711"),
            "password found in {}",
            path.display()
        );
    }
    let db = std::fs::read(server.data_dir().join("confide.db")).unwrap();
    assert!(db.windows(10).any(|window| window == b"$argon2id$"));
}
