//! A minimal MLS member built on openmls, so that the delivery-service tests send the
//! server real KeyPackages, GroupInfos, commits, Welcomes and application messages.
//!
//! Commits travel as public messages (the server must see their epoch); application
//! messages are always private messages. Errors panic: this is test code.

use confide_proto::{DeviceId, Epoch, RoomId};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use tls_codec::Deserialize as _;

const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// One device taking part in MLS groups (one group at a time is enough here).
pub struct Member {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
}

/// A commit made but not yet accepted by the server.
pub struct Outgoing {
    /// The epoch it was made in.
    pub epoch: Epoch,
    /// The commit (a public message).
    pub commit: Vec<u8>,
    /// The GroupInfo of the next epoch, with the ratchet tree.
    pub group_info: Vec<u8>,
    /// The Welcome, if the commit adds members.
    pub welcome: Option<Vec<u8>>,
}

fn bytes(message: &MlsMessageOut) -> Vec<u8> {
    message.to_bytes().unwrap()
}

fn parse(bytes: &[u8]) -> MlsMessageBodyIn {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
}

impl Member {
    /// A device of user `name` (canonical), with Confide's credential for it.
    pub fn new(name: &str, device: DeviceId) -> Member {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        let id = confide_crypto::MemberId {
            user: name.to_owned(),
            device: device.0,
        };
        let credential = CredentialWithKey {
            credential: id.credential(),
            signature_key: signer.to_public_vec().into(),
        };
        Member {
            provider,
            signer,
            credential,
            group: None,
        }
    }

    /// A fresh KeyPackage, encoded as the MLS message the server expects.
    pub fn key_package(&self) -> Vec<u8> {
        let bundle = KeyPackage::builder()
            .build(SUITE, &self.provider, &self.signer, self.credential.clone())
            .unwrap();
        bytes(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    /// Creates the room's group and returns its GroupInfo at epoch 0.
    pub fn create_group(&mut self, room: RoomId) -> Vec<u8> {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(SUITE)
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build();
        let group_id = GroupId::from_slice(&confide_crypto::ds::group_id_for_room(room.0));
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            group_id,
            self.credential.clone(),
        )
        .unwrap();
        self.group = Some(group);
        self.group_info()
    }

    /// The current epoch's GroupInfo, with the ratchet tree.
    pub fn group_info(&self) -> Vec<u8> {
        let group = self.group.as_ref().expect("not in a group");
        bytes(
            &group
                .export_group_info(self.provider.crypto(), &self.signer, true)
                .unwrap(),
        )
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(
            self.group
                .as_ref()
                .expect("not in a group")
                .epoch()
                .as_u64(),
        )
    }

    fn outgoing(&self, epoch: Epoch, bundle: CommitMessageBundle) -> Outgoing {
        let (commit, welcome, group_info) = bundle.into_messages();
        Outgoing {
            epoch,
            commit: bytes(&commit),
            group_info: bytes(&group_info.expect("no GroupInfo in the commit bundle")),
            welcome: welcome.as_ref().map(bytes),
        }
    }

    /// A commit adding the owners of these KeyPackages (as the server handed them out).
    pub fn add(&mut self, key_packages: &[Vec<u8>]) -> Outgoing {
        let packages: Vec<KeyPackage> = key_packages
            .iter()
            .map(|package| match parse(package) {
                MlsMessageBodyIn::KeyPackage(package) => package
                    .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .unwrap(),
                _ => panic!("not a KeyPackage"),
            })
            .collect();
        let epoch = self.epoch();
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().expect("not in a group");
        let bundle = group
            .commit_builder()
            .propose_adds(packages)
            .load_psks(provider.storage())
            .unwrap()
            .build(provider.rand(), provider.crypto(), signer, |_| true)
            .unwrap()
            .stage_commit(provider)
            .unwrap();
        self.outgoing(epoch, bundle)
    }

    /// A commit that only updates this member's own keys.
    pub fn self_update(&mut self) -> Outgoing {
        let epoch = self.epoch();
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().expect("not in a group");
        let bundle = group
            .self_update(provider, signer, LeafNodeParameters::default())
            .unwrap();
        self.outgoing(epoch, bundle)
    }

    /// The server accepted our commit: move to the next epoch.
    pub fn merge(&mut self) {
        let provider = &self.provider;
        let group = self.group.as_mut().expect("not in a group");
        group.merge_pending_commit(provider).unwrap();
    }

    /// The server refused our commit (another one won the epoch): forget it.
    pub fn discard(&mut self) {
        let provider = &self.provider;
        let group = self.group.as_mut().expect("not in a group");
        group.clear_pending_commit(provider.storage()).unwrap();
    }

    /// Joins a group from a Welcome.
    pub fn join(&mut self, welcome: &[u8]) {
        let MlsMessageBodyIn::Welcome(welcome) = parse(welcome) else {
            panic!("not a Welcome");
        };
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build();
        let group = StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .unwrap()
            .into_group(&self.provider)
            .unwrap();
        self.group = Some(group);
    }

    fn process(&mut self, message: &[u8]) -> ProcessedMessageContent {
        let message = MlsMessageIn::tls_deserialize_exact(message)
            .unwrap()
            .try_into_protocol_message()
            .unwrap();
        let provider = &self.provider;
        let group = self.group.as_mut().expect("not in a group");
        group
            .process_message(provider, message)
            .unwrap()
            .into_content()
    }

    /// Applies another member's commit from the room's log.
    pub fn apply_commit(&mut self, commit: &[u8]) {
        match self.process(commit) {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let provider = &self.provider;
                let group = self.group.as_mut().expect("not in a group");
                group.merge_staged_commit(provider, *staged).unwrap();
            }
            _ => panic!("not a commit"),
        }
    }

    /// Encrypts a message for the group (an MLS private message).
    pub fn encrypt(&mut self, text: &str) -> Vec<u8> {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().expect("not in a group");
        bytes(
            &group
                .create_message(provider, signer, text.as_bytes())
                .unwrap(),
        )
    }

    /// Decrypts another member's message.
    pub fn decrypt(&mut self, body: &[u8]) -> String {
        match self.process(body) {
            ProcessedMessageContent::ApplicationMessage(message) => {
                String::from_utf8(message.into_bytes()).unwrap()
            }
            _ => panic!("not an application message"),
        }
    }

    /// How many members the group has, as this member sees it.
    pub fn members(&self) -> usize {
        self.group
            .as_ref()
            .expect("not in a group")
            .members()
            .count()
    }
}
