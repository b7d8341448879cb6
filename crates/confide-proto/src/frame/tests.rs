use super::*;
use crate::e2e::{
    DeviceId, Epoch, IdentityBundle, RoomEncryption, WelcomeId, WelcomeOut, WelcomeRecipient,
};
use crate::ids::{BlobId, MessageNonce, Password, RoomId, Seq, SessionToken, Timestamp, UserId};
use crate::message::{
    EntryKind, ErrorCode, Event, LogEntry, MemberChange, Membership, ProtoError, Reply, RoomInfo,
    RoomKind, SyncCursor, Target,
};
use crate::names::{RoomName, UserName};
use proptest::prelude::*;

fn encode<T: Serialize>(value: &T) -> BytesMut {
    let mut out = BytesMut::new();
    encode_frame(value, MAX_FRAME_LEN, &mut out).unwrap();
    out
}

#[test]
fn header_is_big_endian_length() {
    let frame = ClientFrame {
        id: RequestId(7),
        request: Request::Ping,
    };
    let bytes = encode(&frame);
    assert_eq!(&bytes[..4], &[0, 0, 0, (bytes.len() - 4) as u8]);
    assert_eq!(&bytes[4..], &[7, 16]);
}

#[test]
fn oversized_header_is_refused_before_the_payload_arrives() {
    let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
    let decoder = FrameDecoder::new(MAX_FRAME_LEN);
    assert_eq!(
        decoder.next_payload(&mut buf),
        Err(DecodeError::TooLarge {
            len: 0x7fff_ffff,
            max: MAX_FRAME_LEN
        })
    );
}

#[test]
fn encode_refuses_oversized_payload_and_leaves_buffer_intact() {
    let mut out = BytesMut::from(&b"keep"[..]);
    let big = vec![0u8; 100];
    let err = encode_frame(&big, 50, &mut out).unwrap_err();
    assert!(matches!(err, EncodeError::TooLarge { max: 50, .. }));
    assert_eq!(&out[..], b"keep");
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let frame = ClientFrame {
        id: RequestId(1),
        request: Request::ListRooms,
    };
    let bytes = encode(&frame);
    let decoder = FrameDecoder::new(MAX_FRAME_LEN);
    let mut buf = BytesMut::new();
    for (index, byte) in bytes.iter().enumerate() {
        assert_eq!(decoder.next_payload(&mut buf).unwrap(), None);
        assert!(decoder.bytes_wanted(&buf) >= 1, "at byte {index}");
        buf.put_u8(*byte);
    }
    let payload = decoder.next_payload(&mut buf).unwrap().unwrap();
    assert_eq!(ClientFrame::from_payload(&payload).unwrap(), frame);
    assert!(buf.is_empty());
}

#[test]
fn many_frames_in_one_buffer_all_come_out_in_order() {
    let mut buf = BytesMut::new();
    for index in 0..1000u64 {
        let frame = ClientFrame {
            id: RequestId(index),
            request: Request::Send {
                target: Target::Room(RoomId(1)),
                nonce: MessageNonce([index as u8; 16]),
                body: format!("message {index}").into_bytes(),
            },
        };
        encode_frame(&frame, MAX_FRAME_LEN, &mut buf).unwrap();
    }
    let decoder = FrameDecoder::new(MAX_FRAME_LEN);
    for index in 0..1000u64 {
        let payload = decoder.next_payload(&mut buf).unwrap().unwrap();
        let frame = ClientFrame::from_payload(&payload).unwrap();
        assert_eq!(frame.id, RequestId(index));
        match frame.request {
            Request::Send { body, .. } => assert_eq!(body, format!("message {index}").into_bytes()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(decoder.next_payload(&mut buf).unwrap(), None);
}

#[test]
fn unknown_request_type_keeps_its_id() {
    // id 42, then a discriminant no version-1 request has.
    let payload = [42u8, 200, 1];
    assert_eq!(
        ClientFrame::from_payload(&payload),
        Err(DecodeError::UnknownRequest {
            id: RequestId(42),
            tag: 200
        })
    );
}

#[test]
fn the_last_request_variant_matches_known_variants() {
    // DeleteBlob is the last variant; its discriminant must be KNOWN_VARIANTS - 1.
    let bytes = postcard::to_allocvec(&Request::DeleteBlob {
        blob: BlobId([7; 16]),
    })
    .unwrap();
    assert_eq!(u32::from(bytes[0]), Request::KNOWN_VARIANTS - 1);
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    for payload in [
        &b""[..],
        &[0xff; 12][..],
        &[1, 4, 0xff, 0xff][..],
        b"\x01\x00\x05ab",
    ] {
        assert!(matches!(
            ClientFrame::from_payload(payload),
            Err(DecodeError::Malformed(_))
        ));
        assert!(ServerFrame::from_payload(payload).is_err());
    }
}

fn user_name() -> impl Strategy<Value = UserName> {
    "[a-zA-Z0-9][a-zA-Z0-9_.-]{2,20}".prop_map(|raw| UserName::parse(&raw).unwrap())
}

fn room_name() -> impl Strategy<Value = RoomName> {
    "[a-z0-9][a-z0-9_-]{0,20}".prop_map(|raw| RoomName::parse(&raw).unwrap())
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        any::<u64>().prop_map(|id| Target::Room(RoomId(id))),
        ".{0,40}".prop_map(Target::User),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (".{0,40}", ".{0,40}").prop_map(|(username, password)| Request::Register {
            username,
            password: Password(password)
        }),
        (".{0,40}", ".{0,40}").prop_map(|(username, password)| Request::Login {
            username,
            password: Password(password)
        }),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|token| Request::Resume {
            token: SessionToken(token)
        }),
        Just(Request::Logout),
        (
            target(),
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u8>(), 0..2048)
        )
            .prop_map(|(target, nonce, body)| Request::Send {
                target,
                nonce: MessageNonce(nonce),
                body
            }),
        (
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..20),
            any::<u32>()
        )
            .prop_map(|(cursors, limit)| Request::Sync {
                cursors: cursors
                    .into_iter()
                    .map(|(room, seen)| SyncCursor {
                        room: RoomId(room),
                        seen: Seq(seen)
                    })
                    .collect(),
                limit
            }),
        (
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            any::<u32>()
        )
            .prop_map(|(room, before, limit)| Request::History {
                room: RoomId(room),
                before: before.map(Seq),
                limit
            }),
        Just(Request::ListRooms),
        any::<u64>().prop_map(|room| Request::Members { room: RoomId(room) }),
        (".{0,70}", any::<bool>(), encryption()).prop_map(|(name, private, encryption)| {
            Request::CreateRoom {
                name,
                private,
                encryption,
            }
        }),
        ".{0,70}".prop_map(|name| Request::Join { name }),
        any::<u64>().prop_map(|room| Request::Leave { room: RoomId(room) }),
        (any::<u64>(), ".{0,40}").prop_map(|(room, user)| Request::Invite {
            room: RoomId(room),
            user
        }),
        (any::<u64>(), ".{0,40}").prop_map(|(room, user)| Request::Kick {
            room: RoomId(room),
            user
        }),
        (any::<u64>(), ".{0,40}").prop_map(|(room, user)| Request::Ban {
            room: RoomId(room),
            user
        }),
        (any::<u64>(), ".{0,40}").prop_map(|(room, user)| Request::Unban {
            room: RoomId(room),
            user
        }),
        Just(Request::Ping),
        e2e_request(),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn encryption() -> impl Strategy<Value = RoomEncryption> {
    prop_oneof![
        Just(RoomEncryption::Mls),
        proptest::option::of(any::<[u8; 16]>()).prop_map(|salt| RoomEncryption::SharedKey { salt }),
    ]
}

fn e2e_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<u64>().prop_map(|d| Request::SetDevice {
            device: DeviceId(d)
        }),
        (bytes(64), bytes(256), bytes(64)).prop_map(|(identity_key, device_list, signature)| {
            Request::PublishIdentity {
                bundle: IdentityBundle {
                    identity_key,
                    device_list,
                    signature,
                },
            }
        }),
        ".{0,40}".prop_map(|user| Request::FetchIdentity { user }),
        (
            any::<u64>(),
            proptest::collection::vec(bytes(300), 0..4),
            proptest::option::of(bytes(300))
        )
            .prop_map(|(d, one_time, last_resort)| Request::UploadKeyPackages {
                device: DeviceId(d),
                one_time,
                last_resort
            }),
        ".{0,40}".prop_map(|user| Request::ClaimKeyPackages { user }),
        (any::<u64>(), bytes(512)).prop_map(|(room, group_info)| Request::InitGroup {
            room: RoomId(room),
            group_info
        }),
        (
            any::<u64>(),
            any::<u64>(),
            bytes(512),
            bytes(512),
            proptest::option::of((
                proptest::collection::vec((".{0,40}", any::<u64>()), 0..4),
                bytes(512)
            ))
        )
            .prop_map(
                |(room, epoch, commit, group_info, welcome)| Request::Commit {
                    room: RoomId(room),
                    epoch: Epoch(epoch),
                    commit,
                    group_info,
                    welcome: welcome.map(|(recipients, data)| WelcomeOut {
                        recipients: recipients
                            .into_iter()
                            .map(|(user, d)| WelcomeRecipient {
                                user,
                                device: DeviceId(d)
                            })
                            .collect(),
                        data
                    })
                }
            ),
        any::<u64>().prop_map(|room| Request::FetchGroupInfo { room: RoomId(room) }),
        any::<u64>().prop_map(|d| Request::FetchWelcomes {
            device: DeviceId(d)
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(id, d)| Request::AckWelcome {
            id: WelcomeId(id),
            device: DeviceId(d)
        }),
        (any::<u64>(), bytes(128)).prop_map(|(room, body)| Request::SendEphemeral {
            room: RoomId(room),
            body
        }),
        ".{0,40}".prop_map(|user| Request::OpenDirect { user }),
    ]
}

fn entry() -> impl Strategy<Value = LogEntry> {
    let kind = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(|body| EntryKind::Message { body }),
        (user_name(), 0usize..7).prop_map(|(user, change)| EntryKind::Member {
            user,
            change: [
                MemberChange::Created,
                MemberChange::Joined,
                MemberChange::Left,
                MemberChange::Invited,
                MemberChange::Kicked,
                MemberChange::Banned,
                MemberChange::Unbanned
            ][change]
        }),
        (any::<u64>(), bytes(512)).prop_map(|(epoch, data)| EntryKind::Commit {
            epoch: Epoch(epoch),
            data
        }),
    ];
    (
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        user_name(),
        proptest::option::of(any::<u64>()),
        kind,
    )
        .prop_map(|(room, seq, timestamp, sender, device, kind)| LogEntry {
            room: RoomId(room),
            seq: Seq(seq),
            timestamp: Timestamp(timestamp),
            sender,
            device: device.map(DeviceId),
            kind,
        })
}

fn room_info() -> impl Strategy<Value = RoomInfo> {
    (
        any::<u64>(),
        proptest::option::of(room_name()),
        user_name(),
        any::<u64>(),
        any::<u32>(),
        encryption(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(id, name, peer, last, count, encryption, epoch)| RoomInfo {
                id: RoomId(id),
                kind: if name.is_some() {
                    RoomKind::Public
                } else {
                    RoomKind::Direct { peer: peer.clone() }
                },
                name,
                owner: Some(peer),
                membership: Membership::Joined,
                last_seq: Seq(last),
                member_count: count,
                encryption,
                epoch: epoch.map(Epoch),
            },
        )
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (
            any::<u64>(),
            proptest::collection::vec(entry(), 0..5),
            proptest::collection::vec(room_info(), 0..3),
            any::<bool>()
        )
            .prop_map(|(id, entries, rooms, more)| ServerFrame::Response {
                id: RequestId(id),
                result: Ok(Reply::Synced {
                    rooms,
                    entries,
                    more
                })
            }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(|(id, room, seq, ts)| {
            ServerFrame::Response {
                id: RequestId(id),
                result: Ok(Reply::Sent {
                    room: RoomId(room),
                    seq: Seq(seq),
                    timestamp: Timestamp(ts),
                }),
            }
        }),
        (
            any::<u64>(),
            user_name(),
            proptest::collection::vec(any::<u8>(), 32)
        )
            .prop_map(|(id, username, token)| ServerFrame::Response {
                id: RequestId(id),
                result: Ok(Reply::LoggedIn {
                    user_id: UserId(id),
                    username,
                    token: SessionToken(token)
                })
            }),
        (any::<u64>(), ".{0,60}").prop_map(|(id, message)| ServerFrame::Response {
            id: RequestId(id),
            result: Err(ProtoError::new(ErrorCode::NoSuchRoom, message))
        }),
        entry().prop_map(|entry| ServerFrame::Event(Event::Entry(entry))),
        (any::<u64>(), user_name(), any::<bool>()).prop_map(|(room, user, online)| {
            ServerFrame::Event(Event::Presence {
                room: RoomId(room),
                user,
                online,
            })
        }),
        room_info().prop_map(|info| ServerFrame::Event(Event::Room(info))),
        ".{0,60}"
            .prop_map(|message| ServerFrame::Fatal(ProtoError::new(ErrorCode::TooSlow, message))),
    ]
}

proptest! {
    #[test]
    fn client_frames_round_trip(id in any::<u64>(), request in request()) {
        let frame = ClientFrame { id: RequestId(id), request };
        let mut buf = encode(&frame);
        let payload = FrameDecoder::new(MAX_FRAME_LEN).next_payload(&mut buf).unwrap().unwrap();
        prop_assert_eq!(ClientFrame::from_payload(&payload).unwrap(), frame);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let mut buf = encode(&frame);
        let payload = FrameDecoder::new(MAX_FRAME_LEN).next_payload(&mut buf).unwrap().unwrap();
        prop_assert_eq!(ServerFrame::from_payload(&payload).unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let decoder = FrameDecoder::new(64);
        while let Ok(Some(payload)) = decoder.next_payload(&mut buf) {
            let _ = ClientFrame::from_payload(&payload);
            let _ = ServerFrame::from_payload(&payload);
        }
    }

    #[test]
    fn split_points_do_not_matter(split in 0usize..64, request in request()) {
        let frame = ClientFrame { id: RequestId(3), request };
        let bytes = encode(&frame);
        let split = split.min(bytes.len());
        let decoder = FrameDecoder::new(MAX_FRAME_LEN);
        let mut buf = BytesMut::from(&bytes[..split]);
        if split < bytes.len() {
            prop_assert_eq!(decoder.next_payload(&mut buf).unwrap(), None);
        }
        buf.extend_from_slice(&bytes[split..]);
        let payload = decoder.next_payload(&mut buf).unwrap().unwrap();
        prop_assert_eq!(ClientFrame::from_payload(&payload).unwrap(), frame);
    }
}
