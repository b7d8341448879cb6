//! Live voice (push-to-talk) through the client core: Opus frames sealed with keys
//! exported from the room's MLS epoch, relayed only to members whose speaker is on,
//! decoded by the listener; capture-to-decode latency is measured and printed.

use confide_audio::{FRAME_SAMPLES, LiveDecoder, LiveEncoder, SAMPLE_RATE, correlation};
use confide_client::{ClientEvent, ClientHandle, EventStream};
use confide_crypto::voice::VoiceFrame;
use confide_proto::{ErrorCode, RoomId, RoomName, Target, UserName};
use confide_testkit::{TIMEOUT, TestServer, connect_user};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

async fn register(addr: SocketAddr, profile: &Path, name: &str) -> (ClientHandle, EventStream) {
    connect_user(addr, profile, name, true).await.unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A second of a voice-like test signal: a gliding tone with a slow tremolo.
fn signal(seconds: f32) -> Vec<f32> {
    let count = (seconds * SAMPLE_RATE as f32) as usize;
    (0..count)
        .map(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            let pitch = 180.0 + 120.0 * t;
            let tremolo = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            0.5 * tremolo * (2.0 * std::f32::consts::PI * pitch * t).sin()
        })
        .collect()
}

/// Voice events for `room` until `quiet` passes without one (bounded by TIMEOUT).
async fn voice_until_quiet(
    events: &mut EventStream,
    room: RoomId,
    quiet: Duration,
) -> Vec<(VoiceFrame, u64)> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(quiet, events.next()).await {
            Ok(Some(ClientEvent::Voice { room: r, frame, .. })) if r == room => {
                frames.push((frame, now_ms()));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_voice_reaches_only_listeners_and_sounds_like_what_was_said() {
    let server = TestServer::start().await.unwrap();
    let profiles: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (alice, _alice_events) = register(server.addr, profiles[0].path(), "alice").await;
    let (bob, mut bob_events) = register(server.addr, profiles[1].path(), "bob").await;
    let (carol, mut carol_events) = register(server.addr, profiles[2].path(), "carol").await;
    let name = RoomName::parse("radio").unwrap();
    let room = alice.create_room(name.clone(), true).await.unwrap().id;
    for (user, client) in [("bob", &bob), ("carol", &carol)] {
        alice
            .invite(room, UserName::parse(user).unwrap())
            .await
            .unwrap();
        client.join(name.clone()).await.unwrap();
    }
    // A message sets up the room's MLS group for everyone.
    alice.send_text(Target::Room(room), "on air").await.unwrap();
    for client in [&bob, &carol] {
        let page = client.history(room, None, 10).await.unwrap();
        assert!(page.entries.iter().any(|e| e.text() == Some("on air")));
    }

    bob.listen(room, true).await.unwrap();
    // Bob's side collects as frames arrive, so arrival times are real.
    let collector = tokio::spawn(async move {
        let frames = voice_until_quiet(&mut bob_events, room, Duration::from_secs(1)).await;
        (frames, bob_events)
    });
    let spoken = signal(1.0);
    let mut encoder = LiveEncoder::new().unwrap();
    for chunk in spoken.chunks_exact(FRAME_SAMPLES) {
        let frame = VoiceFrame {
            captured_at_ms: now_ms(),
            packets: vec![encoder.encode(chunk).unwrap()],
        };
        alice.send_live_voice(room, frame).await.unwrap();
        // Real time: one 20 ms frame every 20 ms.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (frames, mut bob_events) = collector.await.unwrap();
    assert_eq!(
        frames.len(),
        spoken.len() / FRAME_SAMPLES,
        "every frame arrived"
    );
    let mut decoder = LiveDecoder::new().unwrap();
    let mut heard = Vec::new();
    let mut latencies: Vec<u64> = Vec::new();
    for (frame, at) in &frames {
        latencies.push(at.saturating_sub(frame.captured_at_ms));
        for packet in &frame.packets {
            heard.extend(decoder.decode(packet).unwrap());
        }
    }
    let similarity = correlation(&spoken, &heard, 2000);
    latencies.sort_unstable();
    eprintln!(
        "live voice: correlation {similarity:.3}; capture to decode p50 {} ms, max {} ms \
         (network and crypto only; a sound card adds its buffers)",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(similarity > 0.8, "correlation {similarity}");

    // Carol never switched her speaker on: nothing reached her.
    assert!(
        voice_until_quiet(&mut carol_events, room, Duration::from_millis(300))
            .await
            .is_empty()
    );

    // Bob switches off: no more voice for him.
    bob.listen(room, false).await.unwrap();
    let frame = VoiceFrame {
        captured_at_ms: now_ms(),
        packets: vec![encoder.encode(&spoken[..FRAME_SAMPLES]).unwrap()],
    };
    alice.send_live_voice(room, frame).await.unwrap();
    assert!(
        voice_until_quiet(&mut bob_events, room, Duration::from_millis(500))
            .await
            .is_empty()
    );

    // Someone outside the room cannot listen.
    let outsider = tempfile::tempdir().unwrap();
    let (dave, _dave_events) = register(server.addr, outsider.path(), "dave").await;
    let err = dave.listen(room, true).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Some(ErrorCode::NotMember | ErrorCode::NoSuchRoom)
        ),
        "{err}"
    );
}
