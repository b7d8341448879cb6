//! Helpers shared by the integration tests that drive raw protocol clients.

use confide_proto::{Membership, Reply, Request, RoomEncryption, RoomId};
use confide_testkit::{RawClient, TestServer};

/// A new account `name`, registered and logged in on a new connection.
pub async fn user(server: &TestServer, name: &str) -> RawClient {
    let mut client = server.raw().await.unwrap();
    client.register(name).await.unwrap();
    client
}

/// A new connection logged in as the existing account `name`.
pub async fn login(server: &TestServer, name: &str) -> RawClient {
    let mut client = server.raw().await.unwrap();
    client.login(name).await.unwrap().unwrap();
    client
}

/// Creates an end-to-end encrypted room, which its creator has joined.
pub async fn create_room(client: &mut RawClient, name: &str, private: bool) -> RoomId {
    match client
        .ok(Request::CreateRoom {
            name: name.to_owned(),
            private,
            encryption: RoomEncryption::Mls,
        })
        .await
        .unwrap()
    {
        Reply::Room(info) => {
            assert_eq!(info.membership, Membership::Joined);
            info.id
        }
        other => panic!("unexpected {other:?}"),
    }
}
