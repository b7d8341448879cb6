//! Who is online: the open, logged-in connections of each user.
//!
//! Room actors consult it when someone joins, to subscribe all of that user's
//! connections; connections add and remove themselves at login and close.

use crate::outbound::{ConnId, Outbound};
use confide_proto::UserId;
use std::collections::HashMap;
use std::sync::Mutex;

/// The registry of logged-in connections.
///
/// A `std::sync::Mutex` suffices: every operation is a short map update, never held
/// across an await.
#[derive(Debug, Default)]
pub struct Sessions {
    online: Mutex<HashMap<UserId, Vec<Outbound>>>,
}

impl Sessions {
    fn online(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<Outbound>>> {
        self.online
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a connection.
    pub fn add(&self, out: Outbound) {
        self.online().entry(out.user).or_default().push(out);
    }

    /// Removes a connection.
    pub fn remove(&self, user: UserId, conn: ConnId) {
        let mut online = self.online();
        if let Some(list) = online.get_mut(&user) {
            list.retain(|out| out.conn != conn);
            if list.is_empty() {
                online.remove(&user);
            }
        }
    }

    /// The open connections of a user.
    #[must_use]
    pub fn connections(&self, user: UserId) -> Vec<Outbound> {
        self.online().get(&user).cloned().unwrap_or_default()
    }

    /// How many users and connections are online.
    #[must_use]
    pub fn counts(&self) -> (usize, usize) {
        let online = self.online();
        (online.len(), online.values().map(Vec::len).sum())
    }
}
