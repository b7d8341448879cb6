//! A store that lives in memory, for tests and benchmarks. Same behaviour as SQLite,
//! minus durability.

use super::{
    Append, Effect, MemberRecord, NewRoom, RecentNonce, RoomRecord, Store, StoreError, StoredAck,
    StoredKind, UserRecord,
};
use confide_proto::{LogEntry, MessageNonce, RoomId, RoomName, Seq, Timestamp, UserId, UserName};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

#[derive(Default)]
struct State {
    users: BTreeMap<UserId, UserRecord>,
    user_names: HashMap<String, UserId>,
    sessions: HashMap<[u8; 32], UserId>,
    rooms: BTreeMap<RoomId, RoomRecord>,
    room_names: HashMap<String, RoomId>,
    directs: HashMap<(UserId, UserId), RoomId>,
    members: BTreeMap<(RoomId, UserId), Seq>,
    invites: BTreeSet<(RoomId, UserId)>,
    bans: BTreeSet<(RoomId, UserId)>,
    log: BTreeMap<(RoomId, Seq), LogEntry>,
    nonces: HashMap<(UserId, MessageNonce), StoredAck>,
}

/// A store held in memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every method leaves the state consistent before it can panic, so a poisoned
        // lock still guards valid data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn ordered(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b { (a, b) } else { (b, a) }
}

impl Store for MemoryStore {
    fn create_user(
        &self,
        name: &UserName,
        password_hash: &str,
        _now: Timestamp,
    ) -> Result<UserRecord, StoreError> {
        let mut state = self.state();
        let canonical = name.canonical();
        if state.user_names.contains_key(&canonical) {
            return Err(StoreError::Conflict);
        }
        let id = UserId(state.users.keys().next_back().map_or(1, |id| id.0 + 1));
        let record = UserRecord {
            id,
            name: name.clone(),
            password_hash: password_hash.to_owned(),
        };
        state.user_names.insert(canonical, id);
        state.users.insert(id, record.clone());
        Ok(record)
    }

    fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError> {
        let state = self.state();
        Ok(state
            .user_names
            .get(&name.canonical())
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.state().users.get(&id).cloned())
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        Ok(self.state().users.values().cloned().collect())
    }

    fn create_session(
        &self,
        token_hash: &[u8; 32],
        user: UserId,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.sessions.contains_key(token_hash) {
            return Err(StoreError::Conflict);
        }
        state.sessions.insert(*token_hash, user);
        Ok(())
    }

    fn session_user(&self, token_hash: &[u8; 32]) -> Result<Option<UserId>, StoreError> {
        Ok(self.state().sessions.get(token_hash).copied())
    }

    fn delete_session(&self, token_hash: &[u8; 32]) -> Result<(), StoreError> {
        self.state().sessions.remove(token_hash);
        Ok(())
    }

    fn create_room(&self, room: &NewRoom, _now: Timestamp) -> Result<RoomRecord, StoreError> {
        let mut state = self.state();
        let canonical = room.name.as_ref().map(RoomName::canonical);
        let direct = room.direct.map(|(a, b)| ordered(a, b));
        if canonical
            .as_ref()
            .is_some_and(|name| state.room_names.contains_key(name))
            || direct.is_some_and(|pair| state.directs.contains_key(&pair))
        {
            return Err(StoreError::Conflict);
        }
        let id = RoomId(state.rooms.keys().next_back().map_or(1, |id| id.0 + 1));
        let record = RoomRecord {
            id,
            name: room.name.clone(),
            kind: room.kind,
            owner: room.owner,
            direct,
        };
        if let Some(name) = canonical {
            state.room_names.insert(name, id);
        }
        if let Some((a, b)) = direct {
            state.directs.insert((a, b), id);
            state.members.insert((id, a), Seq(0));
            state.members.insert((id, b), Seq(0));
        }
        debug_assert!(room.kind == StoredKind::Direct || direct.is_none());
        state.rooms.insert(id, record.clone());
        Ok(record)
    }

    fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        Ok(self.state().rooms.values().cloned().collect())
    }

    fn room_by_name(&self, name: &RoomName) -> Result<Option<RoomRecord>, StoreError> {
        let state = self.state();
        Ok(state
            .room_names
            .get(&name.canonical())
            .and_then(|id| state.rooms.get(id))
            .cloned())
    }

    fn direct_room(&self, a: UserId, b: UserId) -> Result<Option<RoomRecord>, StoreError> {
        let state = self.state();
        Ok(state
            .directs
            .get(&ordered(a, b))
            .and_then(|id| state.rooms.get(id))
            .cloned())
    }

    fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StoreError> {
        let state = self.state();
        state
            .members
            .range((room, UserId(0))..=(room, UserId(u64::MAX)))
            .map(|(&(_, user), &joined_seq)| {
                let name = state
                    .users
                    .get(&user)
                    .map(|record| record.name.clone())
                    .ok_or_else(|| StoreError::Corrupt(format!("member {user} has no account")))?;
                Ok(MemberRecord {
                    user,
                    name,
                    joined_seq,
                })
            })
            .collect()
    }

    fn rooms_of(&self, user: UserId) -> Result<Vec<(RoomId, Seq)>, StoreError> {
        Ok(self
            .state()
            .members
            .iter()
            .filter(|((_, member), _)| *member == user)
            .map(|(&(room, _), &seq)| (room, seq))
            .collect())
    }

    fn invites(&self, room: RoomId) -> Result<Vec<UserId>, StoreError> {
        Ok(self
            .state()
            .invites
            .range((room, UserId(0))..=(room, UserId(u64::MAX)))
            .map(|&(_, user)| user)
            .collect())
    }

    fn invites_of(&self, user: UserId) -> Result<Vec<RoomId>, StoreError> {
        Ok(self
            .state()
            .invites
            .iter()
            .filter(|(_, invited)| *invited == user)
            .map(|&(room, _)| room)
            .collect())
    }

    fn bans(&self, room: RoomId) -> Result<Vec<UserId>, StoreError> {
        Ok(self
            .state()
            .bans
            .range((room, UserId(0))..=(room, UserId(u64::MAX)))
            .map(|&(_, user)| user)
            .collect())
    }

    fn append(&self, batch: &[Append]) -> Result<(), StoreError> {
        let mut state = self.state();
        // Check first so that a failing batch changes nothing, like a rolled-back
        // transaction.
        for append in batch {
            if state
                .log
                .contains_key(&(append.entry.room, append.entry.seq))
            {
                return Err(StoreError::Conflict);
            }
        }
        for append in batch {
            let entry = &append.entry;
            let room = entry.room;
            if let Some((sender, nonce)) = append.nonce {
                state.nonces.entry((sender, nonce)).or_insert(StoredAck {
                    room,
                    seq: entry.seq,
                    timestamp: entry.timestamp,
                });
            }
            match append.effect {
                Some(Effect::AddMember(user)) => {
                    state.members.entry((room, user)).or_insert(entry.seq);
                    state.invites.remove(&(room, user));
                }
                Some(Effect::RemoveMember(user)) => {
                    state.members.remove(&(room, user));
                }
                Some(Effect::Invite(user)) => {
                    state.invites.insert((room, user));
                }
                Some(Effect::Ban(user)) => {
                    state.members.remove(&(room, user));
                    state.invites.remove(&(room, user));
                    state.bans.insert((room, user));
                }
                Some(Effect::Unban(user)) => {
                    state.bans.remove(&(room, user));
                }
                None => {}
            }
            state.log.insert((room, entry.seq), entry.clone());
        }
        Ok(())
    }

    fn entries_after(
        &self,
        room: RoomId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        Ok(self
            .state()
            .log
            .range((room, after.next())..=(room, Seq(u64::MAX)))
            .take(limit)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    fn entries_before(
        &self,
        room: RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let before = before.unwrap_or(Seq(u64::MAX));
        let mut entries: Vec<LogEntry> = self
            .state()
            .log
            .range((room, Seq(0))..(room, before))
            .rev()
            .take(limit)
            .map(|(_, entry)| entry.clone())
            .collect();
        entries.reverse();
        Ok(entries)
    }

    fn last_seq(&self, room: RoomId) -> Result<Seq, StoreError> {
        Ok(self
            .state()
            .log
            .range((room, Seq(0))..=(room, Seq(u64::MAX)))
            .next_back()
            .map_or(Seq(0), |(&(_, seq), _)| seq))
    }

    fn find_nonce(
        &self,
        sender: UserId,
        nonce: &MessageNonce,
    ) -> Result<Option<StoredAck>, StoreError> {
        Ok(self.state().nonces.get(&(sender, *nonce)).copied())
    }

    fn recent_nonces(&self, room: RoomId, limit: usize) -> Result<Vec<RecentNonce>, StoreError> {
        let mut found: Vec<_> = self
            .state()
            .nonces
            .iter()
            .filter(|(_, ack)| ack.room == room)
            .map(|(key, ack)| (*key, (ack.seq, ack.timestamp)))
            .collect();
        found.sort_by_key(|(_, (seq, _))| std::cmp::Reverse(*seq));
        found.truncate(limit);
        Ok(found)
    }

    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
