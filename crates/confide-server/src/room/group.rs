//! The room actor as the MLS delivery service: it creates the room's group record,
//! orders commits by epoch, checks that application messages belong to the current
//! epoch, and relays ephemeral messages.
//!
//! The connection task parses the public framing of MLS messages (in parallel, with
//! `confide_crypto::ds`) and hands the results here; the actor decides in a fixed order,
//! against the state it alone owns. A commit is accepted only if it was made in the
//! group's current epoch, and the actor moves the epoch on at once, so of two commits
//! for one epoch the first to reach the actor wins and the other gets `StaleEpoch`.
//! Nothing here decrypts or logs MLS bytes.

use super::{Person, RoomActor, deny};
use crate::outbound::{ConnId, Outbound, encode};
use crate::persist::{Ack, Job};
use crate::store::{Append, GroupRecord, GroupUpdate, WelcomeBatch, WelcomeFor, Write};
use bytes::Bytes;
use confide_crypto::ds::{CommitInfo, DsError, inspect_application};
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
        let room = self.record.id;
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

    pub(super) fn ephemeral(&mut self, ephemeral: Ephemeral) -> Result<(), ProtoError> {
        self.require_joined(ephemeral.sender.id)?;
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
