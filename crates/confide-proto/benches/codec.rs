//! Frame codec micro-benchmarks: encoding and decoding the frames on the hot path
//! (a client's `Send`, the server's `Entry` event) and splitting a stream of frames.

use bytes::BytesMut;
use confide_proto::frame::FrameDecoder;
use confide_proto::{
    ClientFrame, DeviceId, EntryKind, Event, LogEntry, MAX_FRAME_LEN, MessageNonce, Request,
    RequestId, RoomId, Seq, ServerFrame, Target, Timestamp, UserName, encode_frame,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// About the size of an MLS application message carrying a short chat line.
const BODY: usize = 256;

fn send_frame() -> ClientFrame {
    ClientFrame {
        id: RequestId(12_345),
        request: Request::Send {
            target: Target::Room(RoomId(1)),
            nonce: MessageNonce([7; 16]),
            body: vec![0xab; BODY],
        },
    }
}

fn entry_frame() -> ServerFrame {
    ServerFrame::Event(Event::Entry(LogEntry {
        room: RoomId(1),
        seq: Seq(1_000_000),
        timestamp: Timestamp(1_795_468_796_123),
        sender: UserName::parse("alice").unwrap(),
        device: Some(DeviceId(0x0123_4567_89ab_cdef)),
        kind: EntryKind::Message {
            body: vec![0xab; BODY],
        },
    }))
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    let send = send_frame();
    group.bench_function("encode client send", |b| {
        let mut out = BytesMut::with_capacity(1024);
        b.iter(|| {
            out.clear();
            encode_frame(black_box(&send), MAX_FRAME_LEN, &mut out).unwrap();
        });
    });
    let mut encoded = BytesMut::new();
    encode_frame(&send, MAX_FRAME_LEN, &mut encoded).unwrap();
    let payload = encoded[4..].to_vec();
    group.bench_function("decode client send", |b| {
        b.iter(|| ClientFrame::from_payload(black_box(&payload)).unwrap());
    });
    let entry = entry_frame();
    group.bench_function("encode server entry", |b| {
        let mut out = BytesMut::with_capacity(1024);
        b.iter(|| {
            out.clear();
            encode_frame(black_box(&entry), MAX_FRAME_LEN, &mut out).unwrap();
        });
    });
    let mut encoded = BytesMut::new();
    encode_frame(&entry, MAX_FRAME_LEN, &mut encoded).unwrap();
    let payload = encoded[4..].to_vec();
    group.bench_function("decode server entry", |b| {
        b.iter(|| ServerFrame::from_payload(black_box(&payload)).unwrap());
    });
    group.finish();

    let mut group = c.benchmark_group("stream");
    const FRAMES: u64 = 1000;
    let mut stream = BytesMut::new();
    for _ in 0..FRAMES {
        encode_frame(&entry, MAX_FRAME_LEN, &mut stream).unwrap();
    }
    let stream = stream.freeze();
    group.throughput(Throughput::Elements(FRAMES));
    group.bench_function("split 1000 entry frames", |b| {
        let decoder = FrameDecoder::new(MAX_FRAME_LEN);
        b.iter(|| {
            let mut buf = BytesMut::from(&stream[..]);
            let mut count = 0;
            while let Some(payload) = decoder.next_payload(&mut buf).unwrap() {
                count += black_box(payload.len()).min(1);
            }
            assert_eq!(count, FRAMES as usize);
        });
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
