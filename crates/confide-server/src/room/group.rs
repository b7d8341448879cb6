//! The room actor as the MLS delivery service: it creates the room's group record,
//! orders commits by epoch, verifies them against a public copy of the group, checks
//! that application messages belong to the current epoch, and relays ephemeral messages.
//!
//! The connection task parses the public framing of MLS messages (in parallel, with
//! `confide_crypto::ds`) and hands the results here; the actor decides in a fixed order,
//! against the state it alone owns. A commit is accepted only if it was made in the
//! group's current epoch, and the actor moves the epoch on at once, so of two commits
//! for one epoch the first to reach the actor wins and the other gets `StaleEpoch`.
//!
//! The actor also owns the group's [`GroupWatch`]: the group's public state (tree,
//! credentials, group context), built from the GroupInfo at `InitGroup` (by the
//! connection) or, after a restart, from the stored GroupInfo when the first commit
//! comes (off the actor's thread, on the blocking pool: it verifies every leaf's
//! signature, about 5 ms for 100 members and 50 ms for 1000). A commit for the current
//! epoch must pass its check last, once everything else is in order: signed by its
//! committer's leaf, the committer being the connection's user and device, and its
//! GroupInfo being the one the commit produces. The check costs a few signature
//! verifications and one hash of the tree (about 0.4 ms for 10 members, 1 ms for 100,
//! 6 ms for 1000; `cargo bench -p confide-crypto --bench mls -- "mls watch"`) and runs on
//! the actor, which is what keeps "first valid commit wins" a single decision. If the
//! stored GroupInfo no longer builds a watch (a member's KeyPackage leaf past its
//! lifetime, or data from before the server checked GroupInfos), commits are checked for
//! their framing only, as they were before, until a later GroupInfo builds one; the event
//! is logged.
//!
//! Nothing here decrypts or logs MLS bytes.

use super::{Person, RoomActor, deny};
use crate::outbound::{ConnId, Outbound, encode};
use crate::persist::{Ack, Job};
use crate::store::{Append, GroupRecord, GroupUpdate, WelcomeBatch, WelcomeFor, Write};
use bytes::Bytes;
use confide_crypto::MemberId;
use confide_crypto::ds::{CheckedCommit, CommitInfo, DsError, GroupWatch, inspect_application};
use confide_proto::{
    DeviceId, EntryKind, Epoch, ErrorCode, Event, LogEntry, PendingWelcome, ProtoError, Reply,
    RoomEncryption, Seq, ServerFrame, UserId, WelcomeId,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Bytes of Welcome events one commit may queue for online recipients. Each recipient
/// device gets its own frame (the id differs); past this, the rest find their Welcome
/// with `FetchWelcomes`, so one large commit cannot make the server copy a megabyte a
/// thousand times.
const WELCOME_PUSH_BUDGET: usize = 64 << 20;

/// An `InitGroup` request, parsed by the connection.
#[derive(Debug)]
pub(super) struct InitGroup {
    pub(super) group_info: Vec<u8>,
    pub(super) group_info_epoch: Result<u64, DsError>,
    /// The group's public state from its GroupInfo, checked to hold only the sender's
    /// device; `None` if the connection named no device.
    pub(super) watch: Option<Result<GroupWatch, DsError>>,
}

/// A `Commit` request, parsed and resolved by the connection.
#[derive(Debug)]
pub struct CommitRequest {
    /// Who commits.
    pub sender: Person,
    /// Their connection's device.
    pub device: Option<DeviceId>,
    /// The epoch the client says the commit was made in.
    pub epoch: Epoch,
    /// The commit's bytes.
    pub commit: Vec<u8>,
    /// What its public framing says.
    pub commit_info: Result<CommitInfo, DsError>,
    /// The GroupInfo of the next epoch.
    pub group_info: Vec<u8>,
    /// The epoch the GroupInfo says.
    pub group_info_epoch: Result<u64, DsError>,
    /// The Welcome with its recipients resolved to accounts, or why that failed.
    pub welcome: Option<Result<ResolvedWelcome, ProtoError>>,
}

/// A Welcome whose recipients are known accounts.
#[derive(Debug)]
pub struct ResolvedWelcome {
    /// Its bytes.
    pub data: Vec<u8>,
    /// Each recipient device, once.
    pub recipients: Vec<(Person, DeviceId)>,
}

/// An ephemeral message to relay.
#[derive(Debug)]
pub struct Ephemeral {
    /// Who sends it.
    pub sender: Person,
    /// Their connection's device.
    pub device: Option<DeviceId>,
    /// Their connection, which does not get it back.
    pub conn: ConnId,
    /// Opaque bytes.
    pub body: Vec<u8>,
}

fn invalid(what: &str, err: &DsError) -> ProtoError {
    ProtoError::new(ErrorCode::InvalidHandshake, format!("{what}: {err}"))
}

fn no_device() -> ProtoError {
    ProtoError::new(
        ErrorCode::InvalidHandshake,
        "name this connection's device (SetDevice) before creating a group or committing",
    )
}

fn stale(current: Epoch) -> ProtoError {
    ProtoError::new(
        ErrorCode::StaleEpoch,
        format!("group is at epoch {current}"),
    )
}

impl RoomActor {
    fn require_joined(&self, user: UserId) -> Result<(), ProtoError> {
        if self.members.contains_key(&user) {
            Ok(())
        } else {
            deny(ErrorCode::NotMember, "you are not in this room")
        }
    }

    /// The group, or why there is none.
    fn current_group(&self) -> Result<&GroupRecord, ProtoError> {
        if let Some(group) = &self.group {
            return Ok(group);
        }
        match self.record.encryption {
            RoomEncryption::Mls => deny(
                ErrorCode::NoGroup,
                "this room has no MLS group yet; create it with InitGroup",
            ),
            RoomEncryption::SharedKey { .. } => deny(
                ErrorCode::NoGroup,
                "this room is encrypted with a shared key and has no MLS group",
            ),
        }
    }

    pub(super) fn init_group(
        &mut self,
        sender: &Person,
        init: InitGroup,
    ) -> Result<(Job, Reply), ProtoError> {
        self.require_joined(sender.id)?;
        if let RoomEncryption::SharedKey { .. } = self.record.encryption {
            return deny(
                ErrorCode::NoGroup,
                "this room is encrypted with a shared key; it cannot have an MLS group",
            );
        }
        if let Some(group) = &self.group {
            return deny(
                ErrorCode::GroupExists,
                format!("the room's group exists (epoch {})", group.epoch),
            );
        }
        let epoch = init
            .group_info_epoch
            .map_err(|err| invalid("group info", &err))?;
        if epoch != 0 {
            return deny(
                ErrorCode::InvalidHandshake,
                format!("a new group starts at epoch 0, this GroupInfo is for epoch {epoch}"),
            );
        }
        let watch = init
            .watch
            .ok_or_else(no_device)?
            .map_err(|err| invalid("group info", &err))?;
        let room = self.record.id;
        self.watch = Some(watch);
        self.watch_failed = None;
        self.group = Some(GroupRecord {
            epoch: Epoch(0),
            group_info: init.group_info.clone(),
            seq: Seq(0),
        });
        let reply = Reply::GroupInfo {
            room,
            epoch: Epoch(0),
            seq: Seq(0),
            group_info: init.group_info.clone(),
        };
        let job = Job {
            write: Some(Write::InitGroup {
                room,
                group_info: init.group_info,
            }),
            recipients: Arc::from(Vec::new()),
            extra: Vec::new(),
            pushes: Vec::new(),
            ack: Ack::None,
            original: None,
            notify: self.notices.clone(),
        };
        Ok((job, reply))
    }

    pub(super) fn commit(&mut self, commit: CommitRequest) -> Result<(Job, Reply), ProtoError> {
        self.require_joined(commit.sender.id)?;
        let current = self.current_group()?.epoch;
        if commit.epoch != current {
            return Err(stale(current));
        }
        let info = commit.commit_info.map_err(|err| invalid("commit", &err))?;
        if info.epoch != current.0 {
            return deny(
                ErrorCode::InvalidHandshake,
                format!("the commit was made in epoch {}, not {current}", info.epoch),
            );
        }
        let next = Epoch(current.0.saturating_add(1));
        let group_info_epoch = commit
            .group_info_epoch
            .map_err(|err| invalid("group info", &err))?;
        if group_info_epoch != next.0 {
            return deny(
                ErrorCode::InvalidHandshake,
                format!("the GroupInfo is for epoch {group_info_epoch}, expected {next}"),
            );
        }
        let welcome = commit.welcome.transpose()?;
        if let Some(welcome) = &welcome {
            for (person, _) in &welcome.recipients {
                if !self.members.contains_key(&person.id) && !self.invited.contains(&person.id) {
                    return deny(
                        ErrorCode::NotMember,
                        format!("{} is neither in this room nor invited to it", person.name),
                    );
                }
            }
        }
        let checked = self.verify_commit(
            &commit.sender,
            commit.device,
            &commit.commit,
            &commit.group_info,
        )?;
        // Everything is checked: the commit wins this epoch.
        let room = self.record.id;
        let (seq, timestamp) = self.next_place();
        let entry = LogEntry {
            room,
            seq,
            timestamp,
            sender: commit.sender.name.clone(),
            device: commit.device,
            kind: EntryKind::Commit {
                epoch: current,
                data: commit.commit,
            },
        };
        let mut pushes = Vec::new();
        let welcome = welcome.map(|welcome| {
            let recipients: Vec<(WelcomeFor, Person)> = welcome
                .recipients
                .into_iter()
                .map(|(person, device)| {
                    let id = self.context.welcome_ids.fetch_add(1, Ordering::Relaxed) + 1;
                    let target = WelcomeFor {
                        id: WelcomeId(id),
                        user: person.id,
                        device,
                    };
                    (target, person)
                })
                .collect();
            pushes = self.welcome_pushes(&entry, &welcome.data, &recipients);
            WelcomeBatch {
                data: welcome.data,
                recipients: recipients.into_iter().map(|(target, _)| target).collect(),
            }
        });
        self.group = Some(GroupRecord {
            epoch: next,
            group_info: commit.group_info.clone(),
            seq,
        });
        self.advance_watch(checked);
        let append = Append {
            entry,
            nonce: None,
            effect: None,
            group: Some(GroupUpdate {
                epoch: next,
                group_info: commit.group_info,
                welcome,
            }),
        };
        let mut job = self.job(Some(append), Ack::None);
        job.pushes = pushes;
        let reply = Reply::Committed {
            room,
            seq,
            timestamp,
            epoch: next,
        };
        Ok((job, reply))
    }

    /// Whether a commit calls for the group's watch: it comes from a member for the
    /// current epoch (anything else is refused without it).
    pub(super) fn wants_watch(&self, commit: &CommitRequest) -> bool {
        let current = self.group.as_ref().map(|group| group.epoch);
        current == Some(commit.epoch)
            && self.members.contains_key(&commit.sender.id)
            && self.watch.as_ref().map(GroupWatch::epoch) != Some(commit.epoch.0)
            && self.watch_failed != Some(commit.epoch)
    }

    /// Builds the group's watch from the stored GroupInfo (after a restart or a reload),
    /// on the blocking pool: it verifies every leaf's signature.
    pub(super) async fn rebuild_watch(&mut self) {
        let Some(group) = &self.group else { return };
        let (room, epoch, info) = (self.record.id, group.epoch, group.group_info.clone());
        let built =
            tokio::task::spawn_blocking(move || GroupWatch::from_group_info(room.0, &info)).await;
        let cause = match built {
            Ok(Ok(watch)) if watch.epoch() == epoch.0 => {
                self.watch = Some(watch);
                self.watch_failed = None;
                return;
            }
            Ok(Ok(watch)) => format!("the GroupInfo is for epoch {}", watch.epoch()),
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::warn!(
            room = %room,
            epoch = epoch.0,
            cause = %cause,
            "cannot rebuild the group's public state; checking this epoch's commit for framing only"
        );
        self.watch = None;
        self.watch_failed = Some(epoch);
    }

    /// Verifies a commit for the current epoch against the group's watch. Without a
    /// watch (see the module's documentation) only the device is checked.
    fn verify_commit(
        &self,
        sender: &Person,
        device: Option<DeviceId>,
        commit: &[u8],
        group_info: &[u8],
    ) -> Result<Option<CheckedCommit>, ProtoError> {
        let device = device.ok_or_else(no_device)?;
        let Some(watch) = &self.watch else {
            return Ok(None);
        };
        let committer = MemberId {
            user: sender.name.canonical(),
            device: device.0,
        };
        watch
            .check_commit(commit, group_info, &committer)
            .map(Some)
            .map_err(|err| invalid("commit", &err))
    }

    /// Moves the watch on with an accepted commit.
    fn advance_watch(&mut self, checked: Option<CheckedCommit>) {
        let (Some(watch), Some(checked)) = (&mut self.watch, checked) else {
            // Accepted on its framing only: try the new GroupInfo at the next commit.
            self.watch = None;
            return;
        };
        if let Err(err) = watch.apply(checked) {
            tracing::error!(
                room = %self.record.id,
                cause = %err,
                "cannot advance the group's public state"
            );
            self.watch = None;
        }
    }

    /// The Welcome events for the recipients who are online, within the push budget.
    fn welcome_pushes(
        &self,
        entry: &LogEntry,
        data: &[u8],
        recipients: &[(WelcomeFor, Person)],
    ) -> Vec<(Outbound, Bytes)> {
        let mut pushes = Vec::new();
        let mut budget = WELCOME_PUSH_BUDGET;
        for (target, _) in recipients {
            let connections = self.context.sessions.connections(target.user);
            if connections.is_empty() {
                continue;
            }
            if data.len() > budget {
                break;
            }
            let event = Event::Welcome {
                device: target.device,
                welcome: PendingWelcome {
                    id: target.id,
                    room: entry.room,
                    sender: entry.sender.clone(),
                    timestamp: entry.timestamp,
                    seq: entry.seq,
                    data: data.to_vec(),
                },
            };
            let Some(frame) = encode(&ServerFrame::Event(event)) else {
                continue;
            };
            budget = budget.saturating_sub(frame.len());
            for out in connections {
                pushes.push((out, frame.clone()));
            }
        }
        pushes
    }

    pub(super) fn group_info(&self, asker: UserId) -> Result<Reply, ProtoError> {
        if !self.members.contains_key(&asker) && !self.invited.contains(&asker) {
            return deny(
                ErrorCode::NotMember,
                "you are neither in this room nor invited to it",
            );
        }
        let group = self.current_group()?;
        Ok(Reply::GroupInfo {
            room: self.record.id,
            epoch: group.epoch,
            seq: group.seq,
            group_info: group.group_info.clone(),
        })
    }

    /// Checks a message body for a room with a group: it must be an MLS application
    /// message of this room's group in the current epoch. Rooms without a group relay
    /// any body.
    pub(super) fn check_application(&self, body: &[u8]) -> Result<(), ProtoError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let info = inspect_application(self.record.id.0, body)
            .map_err(|err| invalid("this room is end-to-end encrypted", &err))?;
        if info.epoch != group.epoch.0 {
            return Err(stale(group.epoch));
        }
        Ok(())
    }

    /// Relays an ephemeral message to the online members. In a room with a group it
    /// must be an application message of the current epoch, like a stored one.
    pub(super) fn ephemeral(&mut self, ephemeral: Ephemeral) -> Result<(), ProtoError> {
        self.require_joined(ephemeral.sender.id)?;
        self.check_application(&ephemeral.body)?;
        let frame = ServerFrame::Event(Event::Ephemeral {
            room: self.record.id,
            sender: ephemeral.sender.name,
            device: ephemeral.device,
            body: ephemeral.body,
        });
        let Some(frame) = encode(&frame) else {
            return Ok(());
        };
        for out in self.recipients().iter() {
            if out.conn != ephemeral.conn {
                out.push(frame.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_epoch_names_the_current_epoch() {
        let err = stale(Epoch(7));
        assert_eq!(err.code, ErrorCode::StaleEpoch);
        assert_eq!(err.message, "group is at epoch 7");
    }
}
