//! Who should receive what: the routing of each workload.
//!
//! Every receiver consults its workload's [`Plan`] to tell an expected message from a
//! misrouted one, and the coordinator uses it to count the deliveries each receiver
//! should get. Pure functions of user indices and message counters, no I/O.

use std::sync::Arc;

/// Who should receive what: the routing of a workload, which every receiver consults
/// to tell a misrouted message from an expected one.
pub trait Plan: Send + Sync {
    /// Whether `receiver` should get message `counter` of `sender`.
    fn expects(&self, receiver: u32, sender: u32, counter: u32) -> bool;
    /// Calls `each` with every receiver of message `counter` of `sender`.
    fn receivers(&self, sender: u32, counter: u32, each: &mut dyn FnMut(u32));
}

/// Everyone in one room receives everything (the sender included).
#[derive(Debug, Clone, Copy)]
pub struct Everyone {
    /// Users `0..users`.
    pub users: u32,
}

impl Plan for Everyone {
    fn expects(&self, receiver: u32, _sender: u32, _counter: u32) -> bool {
        receiver < self.users
    }

    fn receivers(&self, _sender: u32, _counter: u32, each: &mut dyn FnMut(u32)) {
        (0..self.users).for_each(each);
    }
}

/// Users in consecutive groups of `size`, each group a room.
#[derive(Debug, Clone, Copy)]
pub struct Groups {
    /// Users `0..users`.
    pub users: u32,
    /// Users per group.
    pub size: u32,
}

impl Groups {
    /// The group of `user`.
    #[must_use]
    pub fn group_of(&self, user: u32) -> u32 {
        user / self.size.max(1)
    }
}

impl Plan for Groups {
    fn expects(&self, receiver: u32, sender: u32, _counter: u32) -> bool {
        receiver < self.users && self.group_of(receiver) == self.group_of(sender)
    }

    fn receivers(&self, sender: u32, _counter: u32, each: &mut dyn FnMut(u32)) {
        let first = self.group_of(sender) * self.size.max(1);
        (first..(first + self.size.max(1)).min(self.users)).for_each(each);
    }
}

/// Direct messages: each message goes to one other user (and back to the sender, as
/// Confide echoes it to every connection of the sender).
#[derive(Debug, Clone)]
pub enum Pairs {
    /// Every user talks to one partner, from a random pairing (with an odd number of
    /// users, three of them talk in a ring). Conversations can be opened before
    /// measuring.
    Partners(Arc<Vec<u32>>),
    /// Every message goes to a new random user, drawn from a hash of the seed, the
    /// sender and the counter: almost every message opens a conversation.
    Random {
        /// Users `0..users`.
        users: u32,
        /// Varies the draw.
        seed: u64,
    },
}

impl Pairs {
    /// A random pairing of users `0..users`, repeatable for a given seed.
    #[must_use]
    pub fn matching(users: u32, seed: u64) -> Pairs {
        let mut order: Vec<u32> = (0..users).collect();
        // Fisher-Yates with the hash as the random source.
        for last in (1..order.len()).rev() {
            let draw = splitmix64(seed ^ last as u64) % (last as u64 + 1);
            order.swap(last, usize::try_from(draw).unwrap_or(0));
        }
        let mut partners: Vec<u32> = (0..users).collect();
        // With an odd number of users, the last three talk in a ring (each writes to
        // the next), so everyone still has exactly one partner writing to them.
        let ring = if users >= 3 && users % 2 == 1 { 3 } else { 0 };
        let (paired, ringed) = order.split_at(order.len() - ring);
        for pair in paired.chunks(2) {
            if let [first, second] = *pair {
                partners[first as usize] = second;
                partners[second as usize] = first;
            }
        }
        for (position, &user) in ringed.iter().enumerate() {
            partners[user as usize] = ringed[(position + 1) % ringed.len()];
        }
        Pairs::Partners(Arc::new(partners))
    }

    /// The receiver of message `counter` of `sender`: never the sender itself.
    #[must_use]
    pub fn peer(&self, sender: u32, counter: u32) -> Option<u32> {
        match self {
            Pairs::Partners(partners) => partners
                .get(sender as usize)
                .copied()
                .filter(|&peer| peer != sender),
            &Pairs::Random { users, seed } => {
                if users < 2 || sender >= users {
                    return None;
                }
                let draw = splitmix64(seed ^ (u64::from(sender) << 32) ^ u64::from(counter));
                // Draw from the others: skip over the sender.
                let pick = u32::try_from(draw % u64::from(users - 1)).unwrap_or(0);
                Some(if pick >= sender { pick + 1 } else { pick })
            }
        }
    }

    /// The conversations to open before measuring, as (opener, peer): one per pair.
    #[must_use]
    pub fn conversations(&self) -> Vec<(u32, u32)> {
        let Pairs::Partners(partners) = self else {
            return Vec::new();
        };
        (0..u32::try_from(partners.len()).unwrap_or(u32::MAX))
            .filter_map(|user| {
                let peer = self.peer(user, 0)?;
                let mutual = self.peer(peer, 0) == Some(user);
                (!mutual || user < peer).then_some((user, peer))
            })
            .collect()
    }
}

/// A fast, well-mixed 64-bit hash (Steele, Lea and Flood's SplitMix64 finaliser).
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Plan for Pairs {
    fn expects(&self, receiver: u32, sender: u32, counter: u32) -> bool {
        receiver == sender || self.peer(sender, counter) == Some(receiver)
    }

    fn receivers(&self, sender: u32, counter: u32, each: &mut dyn FnMut(u32)) {
        each(sender);
        if let Some(peer) = self.peer(sender, counter)
            && peer != sender
        {
            each(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_peers_are_never_the_sender_and_spread() {
        let pairs = Pairs::Random { users: 5, seed: 7 };
        let mut hits = [0u32; 5];
        for sender in 0..5 {
            for counter in 0..200 {
                let peer = pairs.peer(sender, counter).unwrap();
                assert_ne!(peer, sender);
                hits[peer as usize] += 1;
            }
        }
        // 1000 draws over 5 users: each gets a fair share.
        assert!(
            hits.iter().all(|&count| (150..250).contains(&count)),
            "{hits:?}"
        );
        assert_eq!(Pairs::Random { users: 1, seed: 7 }.peer(0, 0), None);
        assert!(pairs.conversations().is_empty());
        let mut receivers = Vec::new();
        pairs.receivers(2, 3, &mut |user| receivers.push(user));
        assert_eq!(receivers, vec![2, pairs.peer(2, 3).unwrap()]);
        assert!(pairs.expects(2, 2, 3));
        let peer = pairs.peer(2, 3).unwrap();
        let bystander = (0..5).find(|&user| user != 2 && user != peer).unwrap();
        assert!(!pairs.expects(bystander, 2, 3));
    }

    #[test]
    fn matching_pairs_everyone_once() {
        for users in [2u32, 7, 100] {
            let pairs = Pairs::matching(users, 3);
            let mut talks_to_me = vec![0; users as usize];
            for user in 0..users {
                let peer = pairs.peer(user, 0).unwrap();
                assert_ne!(peer, user);
                assert_eq!(pairs.peer(user, 99), Some(peer), "one partner for good");
                talks_to_me[peer as usize] += 1;
            }
            // Everyone has exactly one partner writing to them.
            assert!(
                talks_to_me.iter().all(|&count| count == 1),
                "{talks_to_me:?}"
            );
            // One conversation per pair, three for the ring.
            let expected = if users % 2 == 1 {
                (users + 3) / 2
            } else {
                users / 2
            };
            assert_eq!(pairs.conversations().len() as u32, expected);
        }
        assert_ne!(
            Pairs::matching(100, 1).peer(0, 0),
            Pairs::matching(100, 2).peer(0, 0),
            "the seed changes the pairing (for these two seeds)"
        );
    }

    #[test]
    fn groups_route_within_the_group() {
        let groups = Groups {
            users: 25,
            size: 10,
        };
        assert!(groups.expects(9, 0, 0));
        assert!(!groups.expects(10, 0, 0));
        let mut last_group = Vec::new();
        groups.receivers(21, 0, &mut |user| last_group.push(user));
        assert_eq!(last_group, (20..25).collect::<Vec<_>>());
        assert!(!groups.expects(25, 21, 0));
    }

    #[test]
    fn everyone_gets_everything() {
        let everyone = Everyone { users: 3 };
        let mut all = Vec::new();
        everyone.receivers(1, 9, &mut |user| all.push(user));
        assert_eq!(all, vec![0, 1, 2]);
        assert!(everyone.expects(2, 0, 0));
        assert!(!everyone.expects(3, 0, 0));
    }
}
