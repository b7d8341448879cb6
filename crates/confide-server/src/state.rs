//! What every connection task shares: configuration, the store, the blob store, the
//! room registry, who is online, and the account helpers.

use crate::accounts::{LoginLimiter, PasswordHasher};
use crate::blobs::BlobStore;
use crate::config::Config;
use crate::eventlog::EventLog;
use crate::room::{self, Action, Person, RoomContext, RoomHandle};
use crate::sessions::Sessions;
use crate::store::{NewRoom, RoomRecord, Store, StoreError, StoredKind};
use confide_proto::{ErrorCode, ProtoError, RoomEncryption, RoomId, RoomName, Timestamp, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::task::TaskTracker;

/// Shared server state.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Uploaded files.
    pub blobs: Arc<dyn BlobStore>,
    /// Who is online.
    pub sessions: Arc<Sessions>,
    /// Room actors.
    pub rooms: Rooms,
    /// Password hashing.
    pub hasher: PasswordHasher,
    /// Login rate limits.
    pub limiter: LoginLimiter,
    /// The event log.
    pub events: EventLog,
    /// The lobby's id.
    pub lobby: RoomId,
    /// Message rate per account, across all of its connections.
    pub account_rates: AccountRates,
    /// KeyPackage claims per account, so that nobody drains another user's stock.
    pub claim_rates: AccountRates,
    /// Accounts by canonical name. Accounts are never renamed or deleted, so an entry
    /// once found stays true; it saves a database read per message sent by user name.
    pub user_cache: Mutex<HashMap<String, (UserId, confide_proto::UserName)>>,
    next_conn: AtomicU64,
}

/// A token bucket per account, so that opening more connections does not raise how
/// fast one account may post.
///
/// A `std::sync::Mutex` is enough: each check is one map lookup and a little arithmetic.
#[derive(Debug)]
pub struct AccountRates {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<UserId, crate::limits::TokenBucket>>,
}

impl AccountRates {
    /// Limits of `rate` messages per second and bursts of `burst`.
    #[must_use]
    pub fn new(rate: f64, burst: f64) -> AccountRates {
        AccountRates {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one message from the account's allowance, if there is one.
    pub fn take(&self, user: UserId, now: std::time::Instant) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 100_000 {
            // Buckets refill to full after burst/rate seconds; dropping them all at once
            // only forgives a little, and bounds memory.
            buckets.clear();
        }
        buckets
            .entry(user)
            .or_insert_with(|| crate::limits::TokenBucket::new(self.rate, self.burst, now))
            .take(now)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The registry of room actors. An actor starts when its room is first needed (at a
/// member's login, or when asked for by id or name) and leaves memory on its own once
/// nobody is online in the room for a while (`RoomActor::retire`).
pub struct Rooms {
    map: room::Residents,
    /// Rooms whose actors are being started, with who else waits for each.
    loading: Mutex<HashMap<RoomId, Vec<OpenAnswer>>>,
    /// Every public room, for the room list.
    public: Mutex<std::collections::BTreeSet<RoomId>>,
    /// Direct conversations by their two users (lower id first); they never change
    /// once created, so sending by user name needs no database read.
    directs: Mutex<HashMap<(UserId, UserId), RoomId>>,
    /// Held while a named room is created and its actor started.
    creating: tokio::sync::Mutex<()>,
    /// Held by the caller creating the queued direct conversations, so that two
    /// requests for one conversation never start two actors for it.
    creating_directs: tokio::sync::Mutex<()>,
    /// Requests for direct conversations not created yet, oldest first.
    direct_queue: Mutex<Vec<DirectWait>>,
    context: RoomContext,
    tracker: TaskTracker,
}

/// Most direct conversations created with one commit.
const MAX_DIRECT_BATCH: usize = 1024;

/// How often a caller waiting for another's start of a room starts it itself, when
/// the other gives up part way (its connection closed).
const OPEN_ATTEMPTS: usize = 4;

/// Rooms [`Rooms::open_many`] reads from the store in one go at most (about 25 µs each).
const ROOMS_PER_READ: usize = 256;

/// Where the answer to a wait for a room's start goes.
type OpenAnswer = tokio::sync::oneshot::Sender<Result<Option<RoomHandle>, ProtoError>>;

/// Where the answer to a request for a direct conversation goes.
type DirectAnswer = tokio::sync::oneshot::Sender<Result<RoomHandle, ProtoError>>;

/// A queued request for the direct conversation of two users (lower id first).
type DirectWait = ([Person; 2], DirectAnswer);

/// Answers every waiter with `err`.
fn fail_all(waiters: HashMap<(UserId, UserId), Vec<DirectAnswer>>, err: &ProtoError) {
    for answer in waiters.into_values().flatten() {
        let _ = answer.send(Err(err.clone()));
    }
}

/// The server clock, in milliseconds since the Unix epoch.
#[must_use]
pub fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    Timestamp(i64::try_from(millis).unwrap_or(i64::MAX))
}

/// Runs a blocking store call off the async threads.
///
/// # Errors
/// [`ErrorCode::Internal`] if the store fails (the cause is logged, not sent).
pub async fn blocking<T, F>(store: &Arc<dyn Store>, call: F) -> Result<T, ProtoError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || call(store.as_ref())).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(internal(&err)),
        Err(err) => Err(internal(&err)),
    }
}

/// Logs an internal failure and gives the client a generic error.
pub fn internal(cause: &dyn std::fmt::Display) -> ProtoError {
    tracing::error!(cause = %cause, "internal error");
    ProtoError::new(ErrorCode::Internal, "internal server error; try again")
}

impl Shared {
    /// Builds the shared state and starts an actor for every stored room, creating the
    /// lobby on first start.
    ///
    /// # Errors
    /// If the store cannot be read.
    pub async fn new(
        config: Config,
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        context: RoomContext,
        events: EventLog,
        tracker: TaskTracker,
    ) -> anyhow::Result<Shared> {
        let hasher = PasswordHasher::new(&config.argon2)?;
        let limiter = LoginLimiter::new(&config.limits);
        let account_rates = AccountRates::new(
            config.limits.account_messages_per_second,
            config.limits.account_message_burst,
        );
        let claim_rates = AccountRates::new(
            f64::from(config.limits.key_package_claims_per_minute) / 60.0,
            f64::from(config.limits.key_package_claim_burst),
        );
        let records = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || -> Result<Vec<RoomRecord>, StoreError> {
                if store.room_by_name(&RoomName::lobby())?.is_none() {
                    store.create_room(
                        &NewRoom {
                            name: Some(RoomName::lobby()),
                            kind: StoredKind::Public,
                            owner: None,
                            direct: None,
                            encryption: RoomEncryption::Mls,
                        },
                        now(),
                    )?;
                }
                store.rooms()
            })
            .await??
        };
        if let Some(idle) = context.idle {
            tracker.spawn(room::sweep(
                Arc::clone(&context.residents),
                idle,
                context.shutdown.clone(),
            ));
        }
        let rooms = Rooms {
            map: Arc::clone(&context.residents),
            loading: Mutex::new(HashMap::new()),
            public: Mutex::new(std::collections::BTreeSet::new()),
            directs: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            creating_directs: tokio::sync::Mutex::new(()),
            direct_queue: Mutex::new(Vec::new()),
            context: context.clone(),
            tracker,
        };
        // No actor starts yet: each starts when its room is first needed.
        let mut lobby = None;
        for record in records {
            if record
                .name
                .as_ref()
                .is_some_and(|name| name.same_as(&RoomName::lobby()))
            {
                lobby = Some(record.id);
            }
            rooms.know(&record);
        }
        let lobby = lobby.ok_or_else(|| anyhow::anyhow!("the lobby is missing"))?;
        Ok(Shared {
            config,
            store,
            blobs,
            sessions: context.sessions,
            rooms,
            hasher,
            limiter,
            events,
            lobby,
            account_rates,
            claim_rates,
            user_cache: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        })
    }

    /// A fresh connection number.
    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

impl Rooms {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomHandle>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn loading(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, Vec<OpenAnswer>>> {
        self.loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers what never changes about a stored room: whether it is public, and a
    /// direct conversation's pair.
    fn know(&self, record: &RoomRecord) {
        if record.kind == StoredKind::Public {
            self.public
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(record.id);
        }
        if let Some(pair) = record.direct {
            self.directs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(pair, record.id);
        }
    }

    fn known_direct(&self, a: UserId, b: UserId) -> Option<RoomId> {
        let pair = if a <= b { (a, b) } else { (b, a) };
        self.directs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&pair)
            .copied()
    }

    /// The actor of a room if it runs now. Rooms that do not run have nobody online in
    /// them: this is for telling or dropping connections, never for a user's request.
    #[must_use]
    pub fn resident(&self, id: RoomId) -> Option<RoomHandle> {
        self.map().get(&id).cloned()
    }

    /// The actor of a room, started from the store if it does not run; `None` if there
    /// is no such room. Callers asking for the same room at once share one start.
    ///
    /// # Errors
    /// If the room's state cannot be read.
    pub async fn open(&self, id: RoomId) -> Result<Option<RoomHandle>, ProtoError> {
        for _ in 0..OPEN_ATTEMPTS {
            let waiting = {
                let map = self.map();
                if let Some(handle) = map.get(&id) {
                    return Ok(Some(handle.clone()));
                }
                match self.loading().entry(id) {
                    std::collections::hash_map::Entry::Occupied(mut waiters) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        waiters.get_mut().push(tx);
                        Some(rx)
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(Vec::new());
                        None
                    }
                }
            };
            match waiting {
                // The starter was cancelled part way when this fails: start it here.
                Some(answer) => {
                    if let Ok(answer) = answer.await {
                        return answer;
                    }
                }
                None => {
                    let mut start = Starting {
                        rooms: self,
                        id,
                        finished: false,
                    };
                    let answer = self.start(id).await;
                    start.finish(&answer);
                    return answer;
                }
            }
        }
        Err(ProtoError::new(
            ErrorCode::Internal,
            "the room could not be opened; try again",
        ))
    }

    /// The actors of those of rooms `ids` that exist, in the order of `ids`: those that
    /// do not run are started as by [`Rooms::open`], but read from the store together,
    /// in one blocking task, rather than one after another.
    ///
    /// # Errors
    /// If the rooms' state cannot be read.
    pub async fn open_many(&self, ids: &[RoomId]) -> Result<Vec<RoomHandle>, ProtoError> {
        let mut found: HashMap<RoomId, RoomHandle> = HashMap::with_capacity(ids.len());
        let mut starting = Vec::new();
        let mut elsewhere = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        {
            let map = self.map();
            let mut loading = self.loading();
            for &id in ids {
                if !seen.insert(id) {
                    continue;
                }
                if let Some(handle) = map.get(&id) {
                    found.insert(id, handle.clone());
                    continue;
                }
                match loading.entry(id) {
                    std::collections::hash_map::Entry::Occupied(_) => elsewhere.push(id),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(Vec::new());
                        starting.push(Starting {
                            rooms: self,
                            id,
                            finished: false,
                        });
                    }
                }
            }
        }
        // In chunks, so that a user in thousands of rooms does not hold the store's one
        // reading connection for long.
        while !starting.is_empty() {
            let rest = starting.split_off(starting.len().min(ROOMS_PER_READ));
            let mut chunk = std::mem::replace(&mut starting, rest);
            let wanted: Vec<RoomId> = chunk.iter().map(|start| start.id).collect();
            let read = blocking(&self.context.store, move |store| room::read(store, &wanted)).await;
            let stored: Vec<Option<room::Stored>> = match read {
                Ok(stored) => stored,
                Err(err) => {
                    for start in &mut chunk {
                        start.finish(&Err(err.clone()));
                    }
                    // The starts not begun are dropped: their waiters try themselves.
                    return Err(err);
                }
            };
            for (mut start, stored) in chunk.into_iter().zip(stored) {
                let answer = Ok(stored.map(|stored| self.spawn_stored(stored)));
                start.finish(&answer);
                if let Ok(Some(handle)) = answer {
                    found.insert(start.id, handle);
                }
            }
        }
        // Rooms another caller was starting: wait for them as `open` does.
        for id in elsewhere {
            if let Some(handle) = self.open(id).await? {
                found.insert(id, handle);
            }
        }
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    /// Reads a room and starts its actor (see [`Rooms::open`], which makes it findable).
    async fn start(&self, id: RoomId) -> Result<Option<RoomHandle>, ProtoError> {
        let stored = blocking(&self.context.store, move |store| room::read(store, &[id])).await?;
        Ok(stored
            .into_iter()
            .next()
            .flatten()
            .map(|stored| self.spawn_stored(stored)))
    }

    /// Starts the actor of a room just read from the store.
    fn spawn_stored(&self, stored: room::Stored) -> RoomHandle {
        let id = stored.id();
        let handle = room::spawn_stored(self.context.clone(), stored, &self.tracker);
        self.context.events.record("room_load", &[("room", &id)]);
        handle
    }

    /// The ids of every public room, in order.
    #[must_use]
    pub fn public(&self) -> Vec<RoomId> {
        self.public
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Creates a named room owned by `owner`, who becomes its first member.
    ///
    /// # Errors
    /// [`ErrorCode::RoomExists`] if the name is taken.
    pub async fn create(
        &self,
        name: RoomName,
        private: bool,
        encryption: RoomEncryption,
        owner: Person,
    ) -> Result<RoomHandle, ProtoError> {
        let handle = {
            let _creating = self.creating.lock().await;
            let new = NewRoom {
                name: Some(name.clone()),
                kind: if private {
                    StoredKind::Private
                } else {
                    StoredKind::Public
                },
                owner: Some(owner.id),
                direct: None,
                encryption,
            };
            let store = Arc::clone(&self.context.store);
            let created = tokio::task::spawn_blocking(move || store.create_room(&new, now()))
                .await
                .map_err(|err| crate::state::internal(&err))?;
            let record = match created {
                Ok(record) => record,
                Err(StoreError::Conflict) => {
                    return Err(ProtoError::new(
                        ErrorCode::RoomExists,
                        format!("a room named {name} exists"),
                    ));
                }
                Err(err) => return Err(internal(&err)),
            };
            self.know(&record);
            self.open(record.id)
                .await?
                .ok_or_else(|| internal(&"a room just created is missing"))?
        };
        handle.change(owner, Action::Create).await?;
        Ok(handle)
    }

    /// The direct conversation of two users, created on first use.
    ///
    /// Conversations asked for at about the same time are created together, with one
    /// commit: the caller that takes the lead creates everything queued by then, and
    /// the others find their answer waiting.
    ///
    /// # Errors
    /// If it cannot be created.
    pub async fn direct(&self, a: &Person, b: &Person) -> Result<RoomHandle, ProtoError> {
        if let Some(id) = self.known_direct(a.id, b.id)
            && let Some(handle) = self.open(id).await?
        {
            return Ok(handle);
        }
        let pair = if a.id <= b.id {
            [a.clone(), b.clone()]
        } else {
            [b.clone(), a.clone()]
        };
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.direct_queue().push((pair.clone(), tx));
        let mut requeued = 0;
        // Each round answers the oldest queued requests, so ours is answered after at
        // most as many rounds as there were requests before it.
        loop {
            let _lead = self.creating_directs.lock().await;
            match rx.try_recv() {
                Ok(answer) => return answer,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                // The caller that took ours was cancelled part way (its connection
                // closed). Ask again: what it stored is found, not created twice.
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) if requeued < 3 => {
                    requeued += 1;
                    let (tx, again) = tokio::sync::oneshot::channel();
                    rx = again;
                    self.direct_queue().push((pair.clone(), tx));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(ProtoError::new(
                        ErrorCode::Internal,
                        "the conversation could not be opened; try again",
                    ));
                }
            }
            let waiting = {
                let mut queue = self.direct_queue();
                let take = queue.len().min(MAX_DIRECT_BATCH);
                queue.drain(..take).collect::<Vec<_>>()
            };
            self.create_directs(waiting).await;
        }
    }

    fn direct_queue(&self) -> std::sync::MutexGuard<'_, Vec<DirectWait>> {
        self.direct_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Finds or creates the conversation of every queued pair (with one store call),
    /// starts the actors of new ones, tells both users' connections, and answers each
    /// waiter.
    async fn create_directs(&self, waiting: Vec<DirectWait>) {
        let mut pairs: Vec<[Person; 2]> = Vec::new();
        let mut waiters: HashMap<(UserId, UserId), Vec<DirectAnswer>> = HashMap::new();
        for (people, answer) in waiting {
            let ids = (people[0].id, people[1].id);
            if let Some(id) = self.known_direct(ids.0, ids.1) {
                let _ = answer.send(self.open(id).await.and_then(|handle| {
                    handle.ok_or_else(|| internal(&"a known conversation is missing"))
                }));
                continue;
            }
            let entry = waiters.entry(ids).or_default();
            if entry.is_empty() {
                pairs.push(people);
            }
            entry.push(answer);
        }
        if pairs.is_empty() {
            return;
        }
        let store = Arc::clone(&self.context.store);
        let asked: Vec<(UserId, UserId)> = pairs.iter().map(|[a, b]| (a.id, b.id)).collect();
        let records = blocking(&store, move |store| {
            store.direct_rooms(&asked, &RoomEncryption::Mls, now())
        })
        .await;
        let records = match records {
            Ok(records) if records.len() == pairs.len() => records,
            Ok(_) => {
                let err = internal(&"the store answered for other conversations");
                fail_all(waiters, &err);
                return;
            }
            Err(err) => {
                fail_all(waiters, &err);
                return;
            }
        };
        for (people, (record, created)) in pairs.into_iter().zip(records) {
            let ids = (people[0].id, people[1].id);
            self.know(&record);
            let id = record.id;
            let resident = self.resident(id);
            let answer = match resident {
                Some(handle) => Ok(handle),
                None => {
                    let started = if created {
                        // Just stored with nothing in it but the two users: its state
                        // is known without reading it back.
                        self.start_new_direct(record, people).await
                    } else {
                        self.open(id).await.and_then(|handle| {
                            handle.ok_or_else(|| internal(&"a stored conversation is missing"))
                        })
                    };
                    // Stored by a caller cancelled before it told anyone, or just made.
                    if let Ok(handle) = &started {
                        self.announce_direct(handle, ids).await;
                    }
                    started
                }
            };
            for waiter in waiters.remove(&ids).unwrap_or_default() {
                let _ = waiter.send(answer.clone());
            }
        }
    }

    /// Starts the actor of a conversation the store has just created, unless a start
    /// from the store (by its id) got there first.
    async fn start_new_direct(
        &self,
        record: RoomRecord,
        people: [Person; 2],
    ) -> Result<RoomHandle, ProtoError> {
        let id = record.id;
        {
            let mut map = self.map();
            if !map.contains_key(&id) && !self.loading().contains_key(&id) {
                let handle =
                    room::spawn_new_direct(self.context.clone(), record, people, &self.tracker);
                map.insert(id, handle.clone());
                return Ok(handle);
            }
        }
        self.open(id)
            .await?
            .ok_or_else(|| internal(&"a conversation just created is missing"))
    }

    /// Both users' open connections learn about a new conversation; those that log in
    /// later find it in the store.
    async fn announce_direct(&self, handle: &RoomHandle, (a, b): (UserId, UserId)) {
        for user in [a, b] {
            if let Ok(view) = handle.view(user).await
                && let Some(frame) = crate::outbound::encode(&confide_proto::ServerFrame::Event(
                    confide_proto::Event::Room(view.info),
                ))
            {
                for out in self.context.sessions.connections(user) {
                    out.push(frame.clone());
                    handle.subscribe(out).await;
                }
            }
        }
    }
}

/// A start of a room in progress (see [`Rooms::open`]). Dropped before it finishes
/// (its caller cancelled), it lets the waiters start the room themselves.
struct Starting<'a> {
    rooms: &'a Rooms,
    id: RoomId,
    finished: bool,
}

impl Starting<'_> {
    /// Makes the started actor findable and answers everyone waiting for it.
    fn finish(&mut self, answer: &Result<Option<RoomHandle>, ProtoError>) {
        self.finished = true;
        let waiters = {
            let mut map = self.rooms.map();
            if let Ok(Some(handle)) = answer {
                map.insert(self.id, handle.clone());
            }
            self.rooms.loading().remove(&self.id).unwrap_or_default()
        };
        for waiter in waiters {
            let _ = waiter.send(answer.clone());
        }
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Dropping the waiters' senders wakes them to try again.
            let _map = self.rooms.map();
            self.rooms.loading().remove(&self.id);
        }
    }
}
