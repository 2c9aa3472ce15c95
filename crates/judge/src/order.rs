//! The order requests go out in, so that a server can reuse what prompts share.
//!
//! Every prompt of one query is identical up to the document (the system turn, then
//! the query; the templates keep everything query-specific before `{document}`), and
//! llama.cpp's `cache_prompt` with slot selection by prompt similarity, vLLM's
//! automatic prefix caching and OpenAI's prompt caching all skip a prefix they have
//! just processed. Sent in file order with C requests in flight, the first C candidates
//! of each query go out at once, before any of them has put the query in a cache. Here
//! each of the C in-flight *lanes* works through one query's candidates one after
//! another, so every request but a query's first finds its prefix in the slot that
//! just served the lane; a lane that runs out takes the next query, then, when none is
//! left, half of the longest lane's remaining work, so the pipeline stays full.

use std::collections::VecDeque;

/// How `sieve judge` orders its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum RequestOrder {
    /// Each request in flight works through one query's candidates in turn, so the
    /// server's prompt cache holds the query when its next candidate arrives.
    #[default]
    ByQuery,
    /// In the mined file's order, `--concurrency` at a time.
    Input,
}

/// Work for `lanes` concurrent request lanes, grouped by a key (the query).
pub(crate) struct Lanes<T> {
    groups: VecDeque<VecDeque<T>>,
    lanes: Vec<VecDeque<T>>,
}

impl<T> Lanes<T> {
    /// `items` in their order, with `key` saying which group each belongs to; groups
    /// keep the order of their first item. [`RequestOrder::Input`] makes each item its
    /// own group, which hands them out in input order.
    pub(crate) fn new<K: Eq + std::hash::Hash>(
        items: Vec<T>,
        key: impl Fn(&T) -> K,
        lanes: usize,
        order: RequestOrder,
    ) -> Self {
        let mut groups: Vec<VecDeque<T>> = Vec::new();
        let mut index: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
        for item in items {
            match order {
                RequestOrder::Input => groups.push(VecDeque::from([item])),
                RequestOrder::ByQuery => {
                    let g = *index.entry(key(&item)).or_insert_with(|| {
                        groups.push(VecDeque::new());
                        groups.len() - 1
                    });
                    groups[g].push_back(item);
                }
            }
        }
        Self {
            groups: groups.into(),
            lanes: (0..lanes.max(1)).map(|_| VecDeque::new()).collect(),
        }
    }

    pub(crate) fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Items not yet handed out.
    pub(crate) fn remaining(&self) -> usize {
        self.groups.iter().map(VecDeque::len).sum::<usize>()
            + self.lanes.iter().map(VecDeque::len).sum::<usize>()
    }

    /// The next item for `lane`: its current query's next candidate, else the next
    /// query's first, else half of the longest lane's rest (taken from its end).
    pub(crate) fn next(&mut self, lane: usize) -> Option<T> {
        if self.lanes[lane].is_empty() {
            if let Some(g) = self.groups.pop_front() {
                self.lanes[lane] = g;
            } else if let Some(longest) = (0..self.lanes.len())
                .filter(|&l| l != lane)
                .max_by_key(|&l| self.lanes[l].len())
            {
                let from = &mut self.lanes[longest];
                let take = from.len() / 2;
                let split = from.split_off(from.len() - take);
                self.lanes[lane] = split;
            }
        }
        self.lanes[lane].pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(l: &mut Lanes<(char, u32)>, schedule: &[usize]) -> Vec<(usize, (char, u32))> {
        schedule
            .iter()
            .filter_map(|&lane| l.next(lane).map(|x| (lane, x)))
            .collect()
    }

    fn items() -> Vec<(char, u32)> {
        // Query a's candidates, b's, then one of c's, and a late candidate of a.
        let mut v: Vec<(char, u32)> = (0..4).map(|i| ('a', i)).collect();
        v.extend((0..3).map(|i| ('b', i)));
        v.push(('c', 0));
        v.push(('a', 4));
        v
    }

    #[test]
    fn each_lane_works_through_one_query_and_nothing_is_lost_or_repeated() {
        let mut l = Lanes::new(items(), |x| x.0, 2, RequestOrder::ByQuery);
        assert_eq!(l.remaining(), 9);
        // Lanes finish alternately.
        let got = drain(&mut l, &[0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(l.remaining(), 0);
        let lane0: Vec<_> = got.iter().filter(|g| g.0 == 0).map(|g| g.1).collect();
        let lane1: Vec<_> = got.iter().filter(|g| g.0 == 1).map(|g| g.1).collect();
        // Lane 0 takes all of a (the late a·4 with it), lane 1 all of b then c.
        assert_eq!(
            lane0,
            vec![('a', 0), ('a', 1), ('a', 2), ('a', 3), ('a', 4)]
        );
        assert_eq!(lane1, vec![('b', 0), ('b', 1), ('b', 2), ('c', 0)]);
        let mut all: Vec<_> = got.iter().map(|g| g.1).collect();
        all.sort();
        let mut want = items();
        want.sort();
        assert_eq!(all, want);
    }

    #[test]
    fn an_idle_lane_takes_half_of_the_longest_lane() {
        // One query with 8 candidates, 3 lanes: nobody waits for lane 0 alone.
        let v: Vec<(char, u32)> = (0..8).map(|i| ('a', i)).collect();
        let mut l = Lanes::new(v, |x| x.0, 3, RequestOrder::ByQuery);
        assert_eq!(l.next(0), Some(('a', 0)));
        // Lane 1: half of lane 0's 7 left (3), from the end.
        assert_eq!(l.next(1), Some(('a', 5)));
        // Lane 2: half of the longest (lane 0's 4).
        assert_eq!(l.next(2), Some(('a', 3)));
        let mut rest = Vec::new();
        while l.remaining() > 0 {
            for lane in 0..3 {
                rest.extend(l.next(lane));
            }
        }
        rest.extend([('a', 0), ('a', 5), ('a', 3)]);
        rest.sort();
        assert_eq!(rest, (0..8).map(|i| ('a', i)).collect::<Vec<_>>());
    }

    #[test]
    fn input_order_hands_items_out_as_given() {
        let mut l = Lanes::new(items(), |x| x.0, 2, RequestOrder::Input);
        let got: Vec<_> = drain(&mut l, &[0, 1, 1, 0, 0, 1, 0, 1, 0, 0])
            .into_iter()
            .map(|g| g.1)
            .collect();
        assert_eq!(got, items());
    }
}
