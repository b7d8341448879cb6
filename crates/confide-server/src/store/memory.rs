//! A store that lives in memory, for tests and benchmarks. Same behaviour as SQLite,
//! minus durability.

use super::{
    Append, Effect, GroupRecord, KeyPackageStock, MemberRecord, NewRoom, RecentNonce, RoomReads,
    RoomRecord, Store, StoreError, StoredAck, StoredKind, UserRecord, Write,
};
use confide_proto::{
    ClaimedKeyPackage, DeviceId, IdentityBundle, LogEntry, MessageNonce, PendingWelcome, RoomId,
    RoomName, Seq, Timestamp, UserId, UserName, WelcomeId,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

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
    groups: HashMap<RoomId, GroupRecord>,
    identities: HashMap<UserId, IdentityBundle>,
    key_packages: BTreeMap<(UserId, DeviceId), DevicePackages>,
    /// Pending Welcomes by id; recipients of one Welcome share its bytes.
    welcomes: BTreeMap<WelcomeId, StoredWelcome>,
    last_welcome: u64,
}

#[derive(Default)]
struct DevicePackages {
    one_time: VecDeque<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
}

struct StoredWelcome {
    user: UserId,
    device: DeviceId,
    room: RoomId,
    sender: UserName,
    seq: Seq,
    timestamp: Timestamp,
    data: Arc<[u8]>,
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

impl RoomReads for MemoryStore {
    fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StoreError> {
        Ok(self.state().rooms.get(&id).cloned())
    }

    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.state().users.get(&id).cloned())
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

    fn invites(&self, room: RoomId) -> Result<Vec<UserId>, StoreError> {
        Ok(self
            .state()
            .invites
            .range((room, UserId(0))..=(room, UserId(u64::MAX)))
            .map(|&(_, user)| user)
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

    fn group(&self, room: RoomId) -> Result<Option<GroupRecord>, StoreError> {
        Ok(self.state().groups.get(&room).cloned())
    }
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
            encryption: room.encryption.clone(),
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

    fn rooms_of(&self, user: UserId) -> Result<Vec<(RoomId, Seq)>, StoreError> {
        Ok(self
            .state()
            .members
            .iter()
            .filter(|((_, member), _)| *member == user)
            .map(|(&(room, _), &seq)| (room, seq))
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

    fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        let mut state = self.state();
        // Check first so that a failing batch changes nothing, like a rolled-back
        // transaction.
        let mut seen = BTreeSet::new();
        let mut created = BTreeSet::new();
        for write in batch {
            match write {
                Write::Append(append) => {
                    let key = (append.entry.room, append.entry.seq);
                    if state.log.contains_key(&key) || !seen.insert(key) {
                        return Err(StoreError::Conflict);
                    }
                }
                Write::InitGroup { room, .. } => {
                    if state.groups.contains_key(room) || !created.insert(*room) {
                        return Err(StoreError::Conflict);
                    }
                }
            }
        }
        for write in batch {
            match write {
                Write::Append(append) => apply_append(&mut state, append),
                Write::InitGroup { room, group_info } => {
                    state.groups.insert(
                        *room,
                        GroupRecord {
                            epoch: confide_proto::Epoch(0),
                            group_info: group_info.clone(),
                            seq: Seq(0),
                        },
                    );
                }
            }
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

    fn set_identity(&self, user: UserId, bundle: &IdentityBundle) -> Result<(), StoreError> {
        self.state().identities.insert(user, bundle.clone());
        Ok(())
    }

    fn identity(&self, user: UserId) -> Result<Option<IdentityBundle>, StoreError> {
        Ok(self.state().identities.get(&user).cloned())
    }

    fn add_key_packages(
        &self,
        user: UserId,
        device: DeviceId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_one_time: usize,
    ) -> Result<KeyPackageStock, StoreError> {
        let mut state = self.state();
        let packages = state.key_packages.entry((user, device)).or_default();
        if packages.one_time.len() + one_time.len() > max_one_time {
            return Err(StoreError::Limit(max_one_time));
        }
        packages.one_time.extend(one_time.iter().cloned());
        if let Some(last_resort) = last_resort {
            packages.last_resort = Some(last_resort.to_vec());
        }
        Ok(stock(packages))
    }

    fn key_package_stock(
        &self,
        user: UserId,
        device: DeviceId,
    ) -> Result<KeyPackageStock, StoreError> {
        Ok(self
            .state()
            .key_packages
            .get(&(user, device))
            .map(stock)
            .unwrap_or_default())
    }

    fn claim_key_packages(&self, user: UserId) -> Result<Vec<ClaimedKeyPackage>, StoreError> {
        let mut state = self.state();
        let mut claimed = Vec::new();
        let devices = state
            .key_packages
            .range_mut((user, DeviceId(0))..=(user, DeviceId(u64::MAX)));
        for (&(_, device), packages) in devices {
            let package = match packages.one_time.pop_front() {
                Some(package) => package,
                None => match &packages.last_resort {
                    Some(package) => package.clone(),
                    None => continue,
                },
            };
            claimed.push(ClaimedKeyPackage { device, package });
        }
        Ok(claimed)
    }

    fn last_welcome_id(&self) -> Result<WelcomeId, StoreError> {
        Ok(WelcomeId(self.state().last_welcome))
    }

    fn welcomes(&self, user: UserId, device: DeviceId) -> Result<Vec<PendingWelcome>, StoreError> {
        Ok(self
            .state()
            .welcomes
            .iter()
            .filter(|(_, welcome)| welcome.user == user && welcome.device == device)
            .map(|(&id, welcome)| PendingWelcome {
                id,
                room: welcome.room,
                sender: welcome.sender.clone(),
                timestamp: welcome.timestamp,
                seq: welcome.seq,
                data: welcome.data.to_vec(),
            })
            .collect())
    }

    fn delete_welcome(
        &self,
        user: UserId,
        device: DeviceId,
        id: WelcomeId,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let theirs = state
            .welcomes
            .get(&id)
            .is_some_and(|welcome| welcome.user == user && welcome.device == device);
        if theirs {
            state.welcomes.remove(&id);
        }
        Ok(theirs)
    }

    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn stock(packages: &DevicePackages) -> KeyPackageStock {
    KeyPackageStock {
        one_time: packages.one_time.len(),
        last_resort: packages.last_resort.is_some(),
    }
}

fn apply_append(state: &mut State, append: &Append) {
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
    if let Some(update) = &append.group {
        state.groups.insert(
            room,
            GroupRecord {
                epoch: update.epoch,
                group_info: update.group_info.clone(),
                seq: entry.seq,
            },
        );
        if let Some(welcome) = &update.welcome {
            let data: Arc<[u8]> = Arc::from(welcome.data.as_slice());
            for recipient in &welcome.recipients {
                state.last_welcome = state.last_welcome.max(recipient.id.0);
                state.welcomes.insert(
                    recipient.id,
                    StoredWelcome {
                        user: recipient.user,
                        device: recipient.device,
                        room,
                        sender: entry.sender.clone(),
                        seq: entry.seq,
                        timestamp: entry.timestamp,
                        data: Arc::clone(&data),
                    },
                );
            }
        }
    }
    state.log.insert((room, entry.seq), entry.clone());
}
