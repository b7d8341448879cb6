//! Helpers shared by the integration tests that drive raw protocol clients.

use confide_client::{ClientEvent, Entry, EventStream};
use confide_proto::{Membership, Reply, Request, RoomEncryption, RoomId};
use confide_testkit::{RawClient, TIMEOUT, TestServer};

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

/// What `pick` takes from the next entry in `room` it accepts, as a client's events
/// bring them (each wait bounded by the timeout).
pub async fn next_entry<T>(
    events: &mut EventStream,
    room: RoomId,
    mut pick: impl FnMut(&Entry) -> Option<T>,
) -> T {
    loop {
        let event = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .expect("timed out waiting for an entry")
            .expect("stream ended");
        if let ClientEvent::Entry { entry, .. } = event
            && entry.room == room
            && let Some(found) = pick(&entry)
        {
            return found;
        }
    }
}
