//! Group lifecycle: publishing this device, and making a room's group hold exactly the
//! devices of its members before this device encrypts for it.

use super::{E2eError, Secure, is_code, unexpected};
use crate::error::ClientError;
use confide_crypto::{MemberId, PreparedCommit};
use confide_proto::{
    ErrorCode, IdentityBundle, Reply, Request, RoomId, UserName, WelcomeOut, WelcomeRecipient,
};
use std::collections::{BTreeMap, BTreeSet};

/// One-time KeyPackages kept on the server per device; topped up below half of it.
pub const KEY_PACKAGE_STOCK: u32 = 50;

/// Attempts at a commit when other members' commits keep winning the epoch.
pub(super) const COMMIT_ATTEMPTS: usize = 8;

impl Secure {
    /// Publishes the signed device list if the server's copy differs, and tops up the
    /// KeyPackage stock. (The actor tells the server which device each connection is.)
    pub(super) async fn publish(&mut self) -> Result<(), ClientError> {
        let device = self.device_id();
        let signed = self.state.device.signed_device_list()?;
        let mine = IdentityBundle {
            identity_key: signed.identity_key,
            device_list: signed.device_list,
            signature: signed.signature,
        };
        let published = match self
            .request(Request::FetchIdentity {
                user: self.me.to_string(),
            })
            .await?
        {
            Reply::Identity { bundle, .. } => bundle,
            _ => return Err(unexpected("fetch_identity")),
        };
        if published.as_ref() != Some(&mine) {
            self.request(Request::PublishIdentity { bundle: mine })
                .await?;
        }
        let (one_time, last_resort) = match self
            .request(Request::UploadKeyPackages {
                device,
                one_time: Vec::new(),
                last_resort: None,
            })
            .await?
        {
            Reply::KeyPackageStock {
                one_time,
                last_resort,
            } => (one_time, last_resort),
            _ => return Err(unexpected("upload_key_packages")),
        };
        if one_time < KEY_PACKAGE_STOCK / 2 || !last_resort {
            let missing = usize::try_from(KEY_PACKAGE_STOCK.saturating_sub(one_time)).unwrap_or(0);
            let packages = self.state.device.key_packages(missing)?;
            let resort = if last_resort {
                None
            } else {
                Some(self.state.device.last_resort_key_package()?)
            };
            // The private halves are in the device state: save it before the public
            // halves go out, so that no Welcome can arrive for a key this device lost.
            self.unsaved = true;
            self.flush()?;
            self.request(Request::UploadKeyPackages {
                device,
                one_time: packages,
                last_resort: resort,
            })
            .await?;
        }
        Ok(())
    }

    /// Makes sure this device is in `room`'s group at the latest epoch, and that the
    /// group holds the devices of the room's members and no others.
    pub(super) async fn prepare_room(&mut self, room: RoomId) -> Result<(), ClientError> {
        if !self.state.device.has_group(room.0) {
            self.apply_welcomes().await?;
        }
        if !self.state.device.has_group(room.0) {
            self.join_group(room).await?;
        }
        self.catch_up(room).await?;
        if self.dirty.contains(&room) || !self.state.device.has_group(room.0) {
            self.reconcile(room).await?;
        }
        Ok(())
    }

    /// Creates the room's group, or joins it by an external commit if it exists.
    async fn join_group(&mut self, room: RoomId) -> Result<(), ClientError> {
        let info = self.room_info(room, true).await?;
        if info.epoch.is_none() {
            let group_info = self.state.device.create_group(room.0)?;
            self.unsaved = true;
            self.flush()?;
            match self.request(Request::InitGroup { room, group_info }).await {
                Ok(_) => {
                    // Everything before is from before the group existed.
                    self.mark_processed(room, info.last_seq);
                    self.dirty.insert(room);
                    return Ok(());
                }
                Err(err) if is_code(&err, ErrorCode::GroupExists) => {
                    self.state.device.drop_group(room.0)?;
                    self.unsaved = true;
                }
                Err(err) => {
                    self.state.device.drop_group(room.0)?;
                    self.unsaved = true;
                    return Err(err);
                }
            }
        }
        for _ in 0..COMMIT_ATTEMPTS {
            let (group_info, seq) = match self.request(Request::FetchGroupInfo { room }).await? {
                Reply::GroupInfo {
                    group_info, seq, ..
                } => (group_info, seq),
                _ => return Err(unexpected("fetch_group_info")),
            };
            let prepared = self
                .state
                .device
                .prepare_external_join(room.0, &group_info)?;
            // Everything up to the GroupInfo was before this device joined.
            self.mark_processed(room, seq);
            match self.submit(room, prepared).await? {
                Some(seq) => {
                    self.mark_processed(room, seq);
                    self.dirty.insert(room);
                    return Ok(());
                }
                None => continue,
            }
        }
        Err(E2eError::Contended(room).into())
    }

    /// Sends a prepared commit; `Some(seq)` once applied, `None` if another commit won
    /// the epoch (the caller catches up and tries again).
    pub(super) async fn submit(
        &mut self,
        room: RoomId,
        prepared: PreparedCommit,
    ) -> Result<Option<confide_proto::Seq>, ClientError> {
        let welcome = prepared.welcome.map(|data| WelcomeOut {
            recipients: prepared
                .added
                .iter()
                .map(|member| WelcomeRecipient {
                    user: member.user.clone(),
                    device: confide_proto::DeviceId(member.device),
                })
                .collect(),
            data,
        });
        let result = self
            .request(Request::Commit {
                room,
                epoch: confide_proto::Epoch(prepared.epoch),
                commit: prepared.commit,
                group_info: prepared.group_info,
                welcome,
            })
            .await;
        match result {
            Ok(Reply::Committed { seq, .. }) => {
                self.state.device.commit_accepted(room.0)?;
                self.unsaved = true;
                self.flush()?;
                Ok(Some(seq))
            }
            Ok(_) => {
                self.state.device.commit_rejected(room.0)?;
                Err(unexpected("commit"))
            }
            Err(err) if is_code(&err, ErrorCode::StaleEpoch) => {
                self.state.device.commit_rejected(room.0)?;
                self.unsaved = true;
                if self.state.device.has_group(room.0) {
                    self.catch_up(room).await?;
                }
                Ok(None)
            }
            Err(err) => {
                self.state.device.commit_rejected(room.0)?;
                self.unsaved = true;
                Err(err)
            }
        }
    }

    /// Adds the devices of members missing from the group and removes devices that
    /// belong to non-members or are no longer on their user's signed list.
    async fn reconcile(&mut self, room: RoomId) -> Result<(), ClientError> {
        for _ in 0..COMMIT_ATTEMPTS {
            let members = match self.request(Request::Members { room }).await? {
                Reply::Members(members) => members,
                _ => return Err(unexpected("members")),
            };
            // The devices each member's signed list names.
            let mut wanted: BTreeMap<String, (UserName, BTreeMap<u64, Vec<u8>>)> = BTreeMap::new();
            for member in &members {
                match self.fetch_identity(&member.user).await {
                    Ok(_) => {
                        let devices = self
                            .state
                            .trust
                            .contact(&member.user.canonical())
                            .map(|contact| {
                                contact
                                    .devices
                                    .devices
                                    .iter()
                                    .map(|d| (d.device, d.signature_key.clone()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        wanted.insert(member.user.canonical(), (member.user.clone(), devices));
                    }
                    Err(ClientError::E2e(err)) if matches!(*err, E2eError::NoIdentity(_)) => {
                        self.emit(crate::ClientEvent::Warning(format!(
                            "{} has not set up end-to-end encryption yet and cannot read \
                             messages in this room",
                            member.user
                        )));
                    }
                    Err(err) => return Err(err),
                }
            }
            let me = self.state.device.id().clone();
            let current = self.state.device.members(room.0)?;
            let present: BTreeSet<(String, u64)> = current
                .iter()
                .map(|m| (m.id.user.clone(), m.id.device))
                .collect();
            let removals: Vec<MemberId> = current
                .iter()
                .filter(|m| m.id != me)
                .filter(|m| {
                    wanted
                        .get(&m.id.user)
                        .and_then(|(_, devices)| devices.get(&m.id.device))
                        .is_none_or(|key| *key != m.signature_key)
                })
                .map(|m| m.id.clone())
                .collect();
            let mut packages = Vec::new();
            for (canonical, (user, devices)) in &wanted {
                let missing: BTreeSet<u64> = devices
                    .keys()
                    .copied()
                    .filter(|device| !present.contains(&(canonical.clone(), *device)))
                    .filter(|device| !(canonical == &me.user && *device == me.device))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                match self
                    .request(Request::ClaimKeyPackages {
                        user: user.to_string(),
                    })
                    .await
                {
                    Ok(Reply::KeyPackages(claimed)) => packages.extend(
                        claimed
                            .into_iter()
                            .filter(|p| missing.contains(&p.device.0))
                            .map(|p| p.package),
                    ),
                    Ok(_) => return Err(unexpected("claim_key_packages")),
                    Err(err) if is_code(&err, ErrorCode::NoKeyPackages) => {
                        self.emit(crate::ClientEvent::Warning(format!(
                            "{user} has no KeyPackages left; they will be added later"
                        )));
                    }
                    Err(err) => return Err(err),
                }
            }
            if removals.is_empty() && packages.is_empty() {
                self.dirty.remove(&room);
                return Ok(());
            }
            let trust = &self.state.trust;
            let allow = |member: &confide_crypto::GroupMember| {
                trust.allows(&member.id, &member.signature_key)
            };
            let prepared = match self
                .state
                .device
                .prepare_commit(room.0, &packages, &removals, allow)
            {
                Ok(prepared) => prepared,
                Err(err) => {
                    tracing::warn!(%room, cause = %err, "cannot prepare a membership commit");
                    return Err(err.into());
                }
            };
            if self.submit(room, prepared).await?.is_some() {
                self.dirty.remove(&room);
                return Ok(());
            }
        }
        Err(E2eError::Contended(room).into())
    }
}
