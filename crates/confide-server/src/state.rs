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

/// The registry of room actors.
pub struct Rooms {
    map: Mutex<HashMap<RoomId, RoomHandle>>,
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
        let rooms = Rooms {
            map: Mutex::new(HashMap::new()),
            directs: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            creating_directs: tokio::sync::Mutex::new(()),
            direct_queue: Mutex::new(Vec::new()),
            context: context.clone(),
            tracker,
        };
        let mut lobby = None;
        for record in records {
            if record
                .name
                .as_ref()
                .is_some_and(|name| name.same_as(&RoomName::lobby()))
            {
                lobby = Some(record.id);
            }
            rooms.start(record).await?;
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

    async fn start(&self, record: RoomRecord) -> Result<RoomHandle, StoreError> {
        let pair = record.direct;
        let handle = room::spawn(self.context.clone(), record, &self.tracker).await?;
        self.register(&handle, pair);
        Ok(handle)
    }

    /// Makes a started actor findable, by id and (for a direct room) by its pair.
    fn register(&self, handle: &RoomHandle, pair: Option<(UserId, UserId)>) {
        self.map().insert(handle.id, handle.clone());
        if let Some(pair) = pair {
            self.directs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(pair, handle.id);
        }
    }

    fn known_direct(&self, a: UserId, b: UserId) -> Option<RoomHandle> {
        let pair = if a <= b { (a, b) } else { (b, a) };
        let id = *self
            .directs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&pair)?;
        self.get(id)
    }

    /// The actor of a room.
    #[must_use]
    pub fn get(&self, id: RoomId) -> Option<RoomHandle> {
        self.map().get(&id).cloned()
    }

    /// Every public room.
    #[must_use]
    pub fn public(&self) -> Vec<RoomHandle> {
        let mut list: Vec<RoomHandle> = self
            .map()
            .values()
            .filter(|room| room.public)
            .cloned()
            .collect();
        list.sort_by_key(|room| room.id);
        list
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
            self.start(record).await.map_err(|err| internal(&err))?
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
        if let Some(handle) = self.known_direct(a.id, b.id) {
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
            if let Some(handle) = self.known_direct(ids.0, ids.1) {
                let _ = answer.send(Ok(handle));
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
            let answer = match self.get(record.id) {
                Some(handle) => Ok(handle),
                None => {
                    let started = if created {
                        // Just stored with nothing in it but the two users: its state
                        // is known without reading it back.
                        let handle = room::spawn_new_direct(
                            self.context.clone(),
                            record,
                            people,
                            &self.tracker,
                        );
                        self.register(&handle, Some(ids));
                        Ok(handle)
                    } else {
                        self.start(record).await
                    };
                    match started {
                        Ok(handle) => {
                            self.announce_direct(&handle, ids).await;
                            Ok(handle)
                        }
                        Err(err) => Err(internal(&err)),
                    }
                }
            };
            for waiter in waiters.remove(&ids).unwrap_or_default() {
                let _ = waiter.send(answer.clone());
            }
        }
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
