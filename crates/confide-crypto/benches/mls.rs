//! MLS costs that decide how Confide feels: encrypting and decrypting one chat message,
//! the commit plus Welcome that adds a member to groups of growing size, and the server's
//! check of such a commit against its public copy of the group (`ds::GroupWatch`).

use confide_crypto::ds::GroupWatch;
use confide_crypto::{Device, GroupMember};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn anyone(_: &GroupMember) -> bool {
    true
}

/// A group of `size` devices in room 1, created by device 0 with one commit; returns
/// the creator and one other member (when there is one).
fn group_of(size: usize) -> (Device, Option<Device>) {
    let (owner, first, _) = group_with_info(size);
    (owner, first)
}

/// [`group_of`], with the GroupInfo of the group's current epoch.
fn group_with_info(size: usize) -> (Device, Option<Device>, Vec<u8>) {
    let mut owner = Device::create("owner", 0).unwrap();
    let mut info = owner.create_group(1).unwrap();
    let others: Vec<Device> = (1..size)
        .map(|i| Device::create(&format!("user{i}"), i as u64).unwrap())
        .collect();
    let packages: Vec<Vec<u8>> = others
        .iter()
        .map(|d| d.key_packages(1).unwrap().remove(0))
        .collect();
    let mut first = None;
    if !packages.is_empty() {
        let commit = owner.prepare_commit(1, &packages, &[], anyone).unwrap();
        owner.commit_accepted(1).unwrap();
        let mut member = others.into_iter().next().unwrap();
        member.join_from_welcome(&commit.welcome.unwrap()).unwrap();
        first = Some(member);
        info = commit.group_info;
    }
    (owner, first, info)
}

fn messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("mls message");
    group.throughput(Throughput::Elements(1));
    let (mut alice, _) = group_of(2);
    let body = [0x5a_u8; 200];
    group.bench_function("encrypt 200 B", |b| {
        b.iter(|| black_box(alice.encrypt(1, black_box(&body)).unwrap()));
    });
    // Each ciphertext decrypts once (a second time is a replay), so encrypt a fresh
    // one outside the timed part, in a group whose sender and receiver stay in step.
    let (mut alice, bob) = group_of(2);
    let mut bob = bob.unwrap();
    group.bench_function("decrypt 200 B", |b| {
        b.iter_batched(
            || alice.encrypt(1, &body).unwrap(),
            |ciphertext| black_box(bob.process(1, &ciphertext).unwrap()),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn commits(c: &mut Criterion) {
    let mut group = c.benchmark_group("mls add member");
    group.sample_size(10);
    for size in [2usize, 10, 100, 1000] {
        let (mut owner, _) = group_of(size);
        let newcomer = Device::create("newcomer", 99_999).unwrap();
        group.bench_with_input(BenchmarkId::new("commit+welcome", size), &size, |b, _| {
            b.iter_batched(
                || newcomer.key_packages(1).unwrap(),
                |packages| {
                    let commit = owner.prepare_commit(1, &packages, &[], anyone).unwrap();
                    owner.commit_rejected(1).unwrap();
                    black_box(commit)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// What the server spends per commit (checking a commit that adds one device against
/// its watch) and once per group after a restart (building the watch from a GroupInfo,
/// which verifies every leaf).
fn watch(c: &mut Criterion) {
    let mut group = c.benchmark_group("mls watch");
    group.sample_size(10);
    for size in [10usize, 100, 1000] {
        let (mut owner, _, info) = group_with_info(size);
        let watch = GroupWatch::from_group_info(1, &info).unwrap();
        let newcomer = Device::create("newcomer", 99_999).unwrap();
        let committer = owner.id().clone();
        group.bench_with_input(BenchmarkId::new("check add commit", size), &size, |b, _| {
            b.iter_batched(
                || {
                    let packages = newcomer.key_packages(1).unwrap();
                    let commit = owner.prepare_commit(1, &packages, &[], anyone).unwrap();
                    owner.commit_rejected(1).unwrap();
                    commit
                },
                |commit| {
                    black_box(
                        watch
                            .check_commit(&commit.commit, &commit.group_info, &committer)
                            .unwrap(),
                    )
                },
                BatchSize::SmallInput,
            );
        });
        group.bench_with_input(BenchmarkId::new("from group info", size), &size, |b, _| {
            b.iter(|| black_box(GroupWatch::from_group_info(1, &info).unwrap()));
        });
    }
    group.finish();
}

criterion_group!(benches, messages, commits, watch);
criterion_main!(benches);
