//! Request handlers: each turns one request into one response (or, for messages, hands
//! the request to its room, whose commit sends the acknowledgement).

use super::{Connection, LoggedIn};
use crate::accounts::{check_new_password, new_token, token_hash};
use crate::room::{Action, Person, Post, RoomHandle};
use crate::state::{blocking, internal, now};
use crate::store::{StoreError, UserRecord};
use confide_proto::{
    ClientFrame, ErrorCode, LogEntry, Password, ProtoError, Reply, Request, RoomId, RoomInfo,
    RoomName, Seq, ServerFrame, SessionToken, SyncCursor, Target, UserName,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Accounts remembered by name before the cache starts over (bounds its memory).
const USER_CACHE_LIMIT: usize = 100_000;

/// Most entries in one sync or history reply.
const MAX_ENTRIES: usize = 1000;

/// Bytes of entries in one reply, keeping it well under the 1 MiB frame limit.
const REPLY_BUDGET: usize = 768 * 1024;

/// Rough encoded size of an entry, for the reply budget.
fn entry_size(entry: &LogEntry) -> usize {
    let body = match &entry.kind {
        confide_proto::EntryKind::Message { body } => body.len(),
        confide_proto::EntryKind::Member { user, .. } => user.as_str().len(),
        confide_proto::EntryKind::Commit { data, .. } => data.len(),
    };
    64 + entry.sender.as_str().len() + body
}

fn error(code: ErrorCode, message: impl Into<String>) -> ProtoError {
    ProtoError::new(code, message)
}

fn user_name(raw: &str) -> Result<UserName, ProtoError> {
    UserName::parse(raw).map_err(|err| {
        error(
            ErrorCode::InvalidUsername,
            format!("invalid username: {err}"),
        )
    })
}

fn room_name(raw: &str) -> Result<RoomName, ProtoError> {
    RoomName::parse(raw).map_err(|err| {
        error(
            ErrorCode::InvalidRoomName,
            format!("invalid room name: {err}"),
        )
    })
}

impl Connection {
    pub(super) async fn handle(&mut self, frame: ClientFrame) {
        let ClientFrame { id, request } = frame;
        let result = match request {
            Request::Send {
                target,
                nonce,
                body,
            } => {
                // Acknowledged by the room after the commit, not here.
                match self.send(target, nonce, body, id).await {
                    Ok(()) => return,
                    Err(err) => Err(err),
                }
            }
            // Queued by the handler, with the chunk's share of the download window.
            Request::GetChunk { blob, index } => match self.get_chunk(id, blob, index).await {
                Ok(()) => return,
                Err(err) => Err(err),
            },
            request => self.dispatch(request).await,
        };
        self.out.send(&ServerFrame::Response { id, result });
    }

    async fn dispatch(&mut self, request: Request) -> Result<Reply, ProtoError> {
        match request {
            Request::Ping => Ok(Reply::Pong { timestamp: now() }),
            Request::Register { username, password } => {
                self.register(user_name(&username)?, password).await
            }
            Request::Login { username, password } => {
                // A name that could never be registered is an unknown user, and gets the
                // same answer as any unknown user.
                match UserName::parse(&username) {
                    Ok(name) => self.login(name, password).await,
                    Err(_) => Err(error(
                        ErrorCode::InvalidCredentials,
                        "unknown user or wrong password",
                    )),
                }
            }
            Request::Resume { token } => self.resume(token).await,
            request => {
                let Some(user) = self.user.clone() else {
                    return Err(error(ErrorCode::NotLoggedIn, "log in first"));
                };
                self.logged_in(user, request).await
            }
        }
    }

    async fn logged_in(&mut self, user: LoggedIn, request: Request) -> Result<Reply, ProtoError> {
        let me = user.person();
        match request {
            Request::Logout => {
                let hash = user.token_hash;
                blocking(&self.shared.store, move |store| store.delete_session(&hash)).await?;
                self.close_after_reply = true;
                Ok(Reply::Ok)
            }
            Request::Sync { cursors, limit } => self.sync(&user, cursors, limit).await,
            Request::History {
                room,
                before,
                limit,
            } => self.history(&user, room, before, limit).await,
            Request::ListRooms => self.list_rooms(&user).await,
            Request::Members { room } => Ok(Reply::Members(
                self.room(room).await?.members(user.id).await?,
            )),
            Request::CreateRoom {
                name,
                private,
                encryption,
            } => {
                let handle = self
                    .shared
                    .rooms
                    .create(room_name(&name)?, private, encryption, me)
                    .await?;
                self.shared
                    .events
                    .record("room_create", &[("room", &handle.id), ("user", &user.name)]);
                Ok(Reply::Room(handle.view(user.id).await?.info))
            }
            Request::Join { name } => {
                let handle = self.room_named(&room_name(&name)?).await?;
                handle.change(me, Action::Join).await?;
                self.shared
                    .events
                    .record("room_join", &[("room", &handle.id), ("user", &user.name)]);
                Ok(Reply::Room(handle.view(user.id).await?.info))
            }
            Request::Leave { room } => {
                self.room(room).await?.change(me, Action::Leave).await?;
                self.shared
                    .events
                    .record("room_leave", &[("room", &room), ("user", &user.name)]);
                Ok(Reply::Ok)
            }
            Request::Invite { room, user: name } => {
                let subject = self.person(name).await?;
                self.shared.events.record(
                    "room_invite",
                    &[("room", &room), ("by", &user.name), ("user", &subject.name)],
                );
                self.room(room)
                    .await?
                    .change(me, Action::Invite(subject))
                    .await?;
                Ok(Reply::Ok)
            }
            Request::Kick { room, user: name } => {
                let subject = self.person(name).await?;
                self.shared.events.record(
                    "room_kick",
                    &[("room", &room), ("by", &user.name), ("user", &subject.name)],
                );
                self.room(room)
                    .await?
                    .change(me, Action::Kick(subject))
                    .await?;
                Ok(Reply::Ok)
            }
            Request::Ban { room, user: name } => {
                let subject = self.person(name).await?;
                self.shared.events.record(
                    "room_ban",
                    &[("room", &room), ("by", &user.name), ("user", &subject.name)],
                );
                self.room(room)
                    .await?
                    .change(me, Action::Ban(subject))
                    .await?;
                Ok(Reply::Ok)
            }
            Request::Unban { room, user: name } => {
                let subject = self.person(name).await?;
                self.room(room)
                    .await?
                    .change(me, Action::Unban(subject))
                    .await?;
                Ok(Reply::Ok)
            }
            Request::SetDevice { device } => Ok(self.set_device(device)),
            Request::PublishIdentity { bundle } => self.publish_identity(&user, bundle).await,
            Request::FetchIdentity { user: name } => self.fetch_identity(name).await,
            Request::UploadKeyPackages {
                device,
                one_time,
                last_resort,
            } => {
                self.upload_key_packages(&user, device, one_time, last_resort)
                    .await
            }
            Request::ClaimKeyPackages { user: name } => self.claim_key_packages(&user, name).await,
            Request::InitGroup { room, group_info } => {
                self.init_group(&user, room, group_info).await
            }
            Request::Commit {
                room,
                epoch,
                commit,
                group_info,
                welcome,
            } => {
                self.commit(&user, room, epoch, commit, group_info, welcome)
                    .await
            }
            Request::FetchGroupInfo { room } => self.fetch_group_info(&user, room).await,
            Request::FetchWelcomes { device } => self.fetch_welcomes(&user, device).await,
            Request::AckWelcome { id, device } => self.ack_welcome(&user, id, device).await,
            Request::SendEphemeral { room, body } => self.send_ephemeral(&user, room, body).await,
            Request::OpenDirect { user: name } => self.open_direct(&user, name).await,
            Request::CreateBlob {
                room,
                size,
                chunk_size,
            } => self.create_blob(&user, room, size, chunk_size).await,
            Request::BlobStatus { blob } => self.blob_status(&user, blob).await,
            Request::DeleteBlob { blob } => self.delete_blob(&user, blob).await,
            Request::PutChunk { blob, index, data } => {
                self.put_chunk(&user, blob, index, data).await
            }
            Request::Listen { room, on } => self.listen(room, on).await,
            Request::SendVoice { room, body } => self.send_voice(&user, room, body).await,
            Request::Register { .. } | Request::Login { .. } | Request::Resume { .. } => {
                Err(error(
                    ErrorCode::AlreadyLoggedIn,
                    "this connection is already logged in",
                ))
            }
            Request::Ping | Request::Send { .. } | Request::GetChunk { .. } => {
                Err(internal(&"request routed to the wrong handler"))
            }
        }
    }

    pub(super) async fn room(&self, id: RoomId) -> Result<RoomHandle, ProtoError> {
        self.shared
            .rooms
            .open(id)
            .await?
            .ok_or_else(|| error(ErrorCode::NoSuchRoom, format!("no room with id {id}")))
    }

    async fn room_named(&self, name: &RoomName) -> Result<RoomHandle, ProtoError> {
        let lookup = name.clone();
        let record = blocking(&self.shared.store, move |store| store.room_by_name(&lookup)).await?;
        let missing = || error(ErrorCode::NoSuchRoom, format!("no room named {name}"));
        let record = record.ok_or_else(missing)?;
        self.shared.rooms.open(record.id).await?.ok_or_else(missing)
    }

    pub(super) async fn person(&self, raw: String) -> Result<Person, ProtoError> {
        let name = UserName::parse(&raw)
            .map_err(|_| error(ErrorCode::NoSuchUser, format!("no user named {raw:?}")))?;
        let canonical = name.canonical();
        let cached = self
            .shared
            .user_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&canonical)
            .cloned();
        if let Some((id, name)) = cached {
            return Ok(Person { id, name });
        }
        let lookup = name.clone();
        let record = blocking(&self.shared.store, move |store| store.user_by_name(&lookup)).await?;
        let Some(record) = record else {
            return Err(error(
                ErrorCode::NoSuchUser,
                format!("no user named {name}"),
            ));
        };
        let mut cache = self
            .shared
            .user_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= USER_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(canonical, (record.id, record.name.clone()));
        Ok(Person {
            id: record.id,
            name: record.name,
        })
    }

    async fn send(
        &mut self,
        target: Target,
        nonce: confide_proto::MessageNonce,
        body: Vec<u8>,
        id: confide_proto::RequestId,
    ) -> Result<(), ProtoError> {
        let Some(user) = self.user.clone() else {
            return Err(error(ErrorCode::NotLoggedIn, "log in first"));
        };
        let max = self.shared.config.limits.max_body_bytes as usize;
        if body.len() > max {
            return Err(error(
                ErrorCode::MessageTooLarge,
                format!(
                    "message of {} bytes exceeds the limit of {max} bytes",
                    body.len()
                ),
            ));
        }
        let handle = match target {
            Target::Room(room) => self.room(room).await?,
            Target::User(name) => {
                let peer = self.person(name).await?;
                if peer.id == user.id {
                    return Err(error(
                        ErrorCode::InvalidArgument,
                        "you cannot send a direct message to yourself",
                    ));
                }
                self.shared.rooms.direct(&user.person(), &peer).await?
            }
        };
        // Waits when too many of this connection's messages await their commit, which
        // stops reading from a client that floods faster than the disk can keep up.
        let permit = Arc::clone(&self.inflight)
            .acquire_owned()
            .await
            .map_err(|_| error(ErrorCode::ShuttingDown, "the server is shutting down"))?;
        handle
            .post(Post {
                sender: Person {
                    id: user.id,
                    name: user.name,
                },
                device: self.device,
                nonce,
                body,
                out: self.out.clone(),
                id,
                permit,
            })
            .await;
        Ok(())
    }

    async fn register(
        &mut self,
        username: UserName,
        password: Password,
    ) -> Result<Reply, ProtoError> {
        if self.user.is_some() {
            return Err(error(
                ErrorCode::AlreadyLoggedIn,
                "this connection is already logged in",
            ));
        }
        check_new_password(&username, &password)?;
        self.shared
            .limiter
            .check(self.peer.ip(), None, Instant::now())?;
        let hasher = self.shared.hasher.clone();
        let hash = tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|err| internal(&err))?
            .map_err(|err| internal(&err))?;
        let name = username.clone();
        let store = Arc::clone(&self.shared.store);
        let created = tokio::task::spawn_blocking(move || store.create_user(&name, &hash, now()))
            .await
            .map_err(|err| internal(&err))?;
        let record = match created {
            Ok(record) => record,
            Err(StoreError::Conflict) => {
                return Err(error(
                    ErrorCode::UsernameTaken,
                    format!("the username {username} is taken (names are compared ignoring case)"),
                ));
            }
            Err(err) => return Err(internal(&err)),
        };
        self.shared
            .events
            .record("register", &[("conn", &self.conn), ("user", &record.name)]);
        self.start_session(record).await
    }

    async fn login(&mut self, username: UserName, password: Password) -> Result<Reply, ProtoError> {
        if self.user.is_some() {
            return Err(error(
                ErrorCode::AlreadyLoggedIn,
                "this connection is already logged in",
            ));
        }
        let canonical = username.canonical();
        self.shared
            .limiter
            .check(self.peer.ip(), Some(&canonical), Instant::now())?;
        let lookup = username.clone();
        let record = blocking(&self.shared.store, move |store| store.user_by_name(&lookup)).await?;
        let hasher = self.shared.hasher.clone();
        let stored = record.as_ref().map(|record| record.password_hash.clone());
        let valid =
            tokio::task::spawn_blocking(move || hasher.verify(&password, stored.as_deref()))
                .await
                .map_err(|err| internal(&err))?;
        match record {
            Some(record) if valid => {
                self.shared.limiter.succeeded(&canonical);
                self.start_session(record).await
            }
            _ => {
                self.shared.limiter.failed(&canonical, Instant::now());
                self.shared.events.record(
                    "login_failed",
                    &[("conn", &self.conn), ("peer", &self.peer)],
                );
                Err(error(
                    ErrorCode::InvalidCredentials,
                    "unknown user or wrong password",
                ))
            }
        }
    }

    async fn resume(&mut self, token: SessionToken) -> Result<Reply, ProtoError> {
        if self.user.is_some() {
            return Err(error(
                ErrorCode::AlreadyLoggedIn,
                "this connection is already logged in",
            ));
        }
        // Resuming does not count against the login limits: a 256-bit random token
        // cannot be guessed, and every command-line invocation resumes once.
        let hash = token_hash(&token);
        let record = blocking(&self.shared.store, move |store| {
            match store.session_user(&hash)? {
                Some(user) => store.user_by_id(user),
                None => Ok(None),
            }
        })
        .await?;
        let Some(record) = record else {
            return Err(error(
                ErrorCode::InvalidSession,
                "the session has ended; log in again with your password",
            ));
        };
        self.finish_login(record, token, hash).await
    }

    async fn start_session(&mut self, record: UserRecord) -> Result<Reply, ProtoError> {
        let (token, hash) = new_token();
        let user = record.id;
        blocking(&self.shared.store, move |store| {
            store.create_session(&hash, user, now())
        })
        .await?;
        self.finish_login(record, token, hash).await
    }

    async fn finish_login(
        &mut self,
        record: UserRecord,
        token: SessionToken,
        token_hash: [u8; 32],
    ) -> Result<Reply, ProtoError> {
        let me = Person {
            id: record.id,
            name: record.name.clone(),
        };
        // Every account is in the lobby (unless banned from it); this also repairs an
        // account whose registration was cut off before it joined.
        if let Some(lobby) = self.shared.rooms.open(self.shared.lobby).await? {
            lobby.change(me.clone(), Action::EnsureMember).await?;
        }
        self.out = self.out.for_user(record.id);
        self.user = Some(LoggedIn {
            id: record.id,
            name: record.name.clone(),
            token_hash,
        });
        // Registering first and reading memberships second means a room joined in
        // between is seen by one side or the other (see the room actor's notices).
        self.shared.sessions.add(self.out.clone());
        let user = record.id;
        let rooms = blocking(&self.shared.store, move |store| store.rooms_of(user)).await?;
        let ids: Vec<RoomId> = rooms.into_iter().map(|(room, _)| room).collect();
        for handle in self.shared.rooms.open_many(&ids).await? {
            handle.subscribe(self.out.clone()).await;
        }
        self.shared.events.record(
            "login",
            &[
                ("conn", &self.conn),
                ("user", &record.name),
                ("peer", &self.peer),
            ],
        );
        Ok(Reply::LoggedIn {
            user_id: record.id,
            username: record.name,
            token,
        })
    }

    async fn room_infos(
        &self,
        user: &LoggedIn,
        ids: impl IntoIterator<Item = RoomId>,
    ) -> Result<Vec<RoomInfo>, ProtoError> {
        let ids: Vec<RoomId> = ids.into_iter().collect();
        let mut infos = Vec::with_capacity(ids.len());
        for handle in self.shared.rooms.open_many(&ids).await? {
            infos.push(handle.view(user.id).await?.info);
        }
        Ok(infos)
    }

    async fn list_rooms(&self, user: &LoggedIn) -> Result<Reply, ProtoError> {
        let user_id = user.id;
        let (mine, invited) = blocking(&self.shared.store, move |store| {
            Ok((store.rooms_of(user_id)?, store.invites_of(user_id)?))
        })
        .await?;
        let mut ids: Vec<RoomId> = mine
            .into_iter()
            .map(|(room, _)| room)
            .chain(invited)
            .collect();
        ids.extend(self.shared.rooms.public());
        ids.sort_unstable();
        ids.dedup();
        Ok(Reply::Rooms(self.room_infos(user, ids).await?))
    }

    async fn sync(
        &self,
        user: &LoggedIn,
        cursors: Vec<SyncCursor>,
        limit: u32,
    ) -> Result<Reply, ProtoError> {
        let limit = (limit as usize).clamp(1, MAX_ENTRIES);
        let user_id = user.id;
        let (mine, invited) = blocking(&self.shared.store, move |store| {
            Ok((store.rooms_of(user_id)?, store.invites_of(user_id)?))
        })
        .await?;
        let seen: HashMap<RoomId, Seq> = cursors
            .iter()
            .map(|cursor| (cursor.room, cursor.seen))
            .collect();
        // Each room starts after what the client has seen, and never before the entry
        // that made the user a member.
        let starts: Vec<(RoomId, Seq)> = mine
            .iter()
            .map(|&(room, joined)| {
                let floor = Seq(joined.0.saturating_sub(1));
                (room, seen.get(&room).copied().unwrap_or(floor).max(floor))
            })
            .collect();
        let (entries, more) = blocking(&self.shared.store, move |store| {
            let mut entries = Vec::new();
            let mut budget = REPLY_BUDGET;
            for (room, after) in starts {
                let remaining = limit - entries.len();
                if remaining == 0 {
                    return Ok((entries, true));
                }
                let found = store.entries_after(room, after, remaining + 1)?;
                let complete = found.len() <= remaining;
                for entry in found.into_iter().take(remaining) {
                    let size = entry_size(&entry);
                    if size > budget && !entries.is_empty() {
                        return Ok((entries, true));
                    }
                    budget = budget.saturating_sub(size);
                    entries.push(entry);
                }
                if !complete {
                    return Ok((entries, true));
                }
            }
            Ok((entries, false))
        })
        .await?;
        let ids = mine.into_iter().map(|(room, _)| room).chain(invited);
        let rooms = self.room_infos(user, ids).await?;
        Ok(Reply::Synced {
            rooms,
            entries,
            more,
        })
    }

    async fn history(
        &self,
        user: &LoggedIn,
        room: RoomId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<Reply, ProtoError> {
        let view = self.room(room).await?.view(user.id).await?;
        let Some(joined) = view.joined_seq else {
            return Err(error(ErrorCode::NotMember, "you are not in this room"));
        };
        let limit = (limit as usize).clamp(1, MAX_ENTRIES);
        let found = blocking(&self.shared.store, move |store| {
            store.entries_before(room, before, limit + 1)
        })
        .await?;
        // Entries from before the user joined are not theirs to read.
        let visible: Vec<LogEntry> = found
            .into_iter()
            .filter(|entry| entry.seq >= joined)
            .collect();
        let mut more = visible.len() > limit;
        let mut entries: Vec<LogEntry> = visible.into_iter().rev().take(limit).collect();
        entries.reverse();
        let mut budget = REPLY_BUDGET;
        let mut keep = entries.len();
        for (index, entry) in entries.iter().enumerate().rev() {
            let size = entry_size(entry);
            if size > budget && index + 1 < entries.len() {
                keep = entries.len() - index - 1;
                more = true;
                break;
            }
            budget = budget.saturating_sub(size);
        }
        let entries = entries.split_off(entries.len() - keep);
        Ok(Reply::History { entries, more })
    }
}
