//! `vipd plan`: what each node holds now and after every combination of up to k failures,
//! using the same placement as the daemon (so minimal movement is part of the answer).

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use super::placement::{self, Member};

/// Most failure scenarios a plan enumerates.
pub const MAX_SCENARIOS: usize = 100_000;

/// One failure scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The failed nodes.
    pub failed: Vec<u32>,
    /// VIPs held by each surviving node.
    pub counts: BTreeMap<u32, usize>,
    /// The largest `after / now` among the survivors (infinite if a node that held
    /// nothing must now hold VIPs).
    pub max_multiplier: f64,
}

/// A capacity plan for one pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The nodes and their weights.
    pub members: Vec<Member>,
    /// Number of VIPs.
    pub vips: usize,
    /// VIPs per node with every node up.
    pub now: BTreeMap<u32, usize>,
    /// Every combination of 1..=k failures, fewest first.
    pub scenarios: Vec<Scenario>,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// No nodes given.
    #[error("a plan needs at least one node")]
    NoNodes,
    /// k must leave a survivor.
    #[error("--failures {k} must be less than the number of nodes ({nodes})")]
    TooManyFailures { k: usize, nodes: usize },
    /// Too many combinations to enumerate.
    #[error(
        "{0} failure scenarios are too many to list (at most {MAX_SCENARIOS}): lower --failures"
    )]
    TooManyScenarios(u128),
}

/// Computes the plan for `pool` over `members` with up to `k` failures.
pub fn plan(
    pool: &[IpAddr],
    members: &[Member],
    k: usize,
    preempt: bool,
) -> Result<Plan, PlanError> {
    let mut members = members.to_vec();
    members.sort();
    members.dedup_by_key(|m| m.id);
    if members.is_empty() {
        return Err(PlanError::NoNodes);
    }
    if k >= members.len() {
        return Err(PlanError::TooManyFailures {
            k,
            nodes: members.len(),
        });
    }
    let total: u128 = (1..=k)
        .map(|i| binomial(members.len() as u128, i as u128))
        .sum();
    if total > MAX_SCENARIOS as u128 {
        return Err(PlanError::TooManyScenarios(total));
    }
    let now_assignment = placement::place(pool, &members, &BTreeMap::new(), preempt);
    let now = placement::counts(&now_assignment, &members);
    let mut scenarios = Vec::new();
    for size in 1..=k {
        for failed in combinations(&members, size) {
            let survivors: Vec<Member> = members
                .iter()
                .copied()
                .filter(|m| !failed.contains(&m.id))
                .collect();
            let after = placement::place(pool, &survivors, &now_assignment, preempt);
            let counts = placement::counts(&after, &survivors);
            let max_multiplier = counts
                .iter()
                .map(|(id, &c)| multiplier(now[id], c))
                .fold(0.0, f64::max);
            scenarios.push(Scenario {
                failed,
                counts,
                max_multiplier,
            });
        }
    }
    Ok(Plan {
        members,
        vips: pool.len(),
        now,
        scenarios,
    })
}

fn multiplier(now: usize, after: usize) -> f64 {
    match (now, after) {
        (_, 0) => 0.0,
        (0, _) => f64::INFINITY,
        (n, a) => a as f64 / n as f64,
    }
}

fn binomial(n: u128, k: u128) -> u128 {
    (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
}

/// Every `size`-subset of the members' ids, in lexicographic order.
fn combinations(members: &[Member], size: usize) -> Vec<Vec<u32>> {
    let ids: Vec<u32> = members.iter().map(|m| m.id).collect();
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..size).collect();
    loop {
        out.push(idx.iter().map(|&i| ids[i]).collect());
        // Advance the rightmost index that can still move.
        let Some(pos) = (0..size).rev().find(|&p| idx[p] < ids.len() - size + p) else {
            return out;
        };
        idx[pos] += 1;
        for p in pos + 1..size {
            idx[p] = idx[p - 1] + 1;
        }
    }
}

impl Plan {
    /// The scenario with the largest multiplier (the first one on ties).
    pub fn worst(&self) -> Option<&Scenario> {
        self.scenarios
            .iter()
            .fold(None, |best: Option<&Scenario>, s| match best {
                Some(b) if b.max_multiplier >= s.max_multiplier => Some(b),
                _ => Some(s),
            })
    }

    /// A human table: one row for now and one per scenario, one column per node.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let weights: Vec<String> = self.members.iter().map(|m| m.weight.to_string()).collect();
        let _ = writeln!(
            t,
            "{} VIPs on {} nodes (weights {}), up to {} failure(s)",
            self.vips,
            self.members.len(),
            weights.join(","),
            self.scenarios
                .iter()
                .map(|s| s.failed.len())
                .max()
                .unwrap_or(0)
        );
        let _ = write!(t, "{:<16}", "scenario");
        for m in &self.members {
            let _ = write!(t, "{:>7}", format!("n{}", m.id));
        }
        let _ = writeln!(t, "{:>10}", "worst ×");
        let row =
            |t: &mut String, label: &str, counts: &BTreeMap<u32, usize>, mult: Option<f64>| {
                let _ = write!(t, "{label:<16}");
                for m in &self.members {
                    match counts.get(&m.id) {
                        Some(c) => {
                            let _ = write!(t, "{c:>7}");
                        }
                        None => {
                            let _ = write!(t, "{:>7}", "-");
                        }
                    }
                }
                let _ = writeln!(
                    t,
                    "{:>10}",
                    mult.map_or(String::new(), |m| format!("{m:.2}"))
                );
            };
        row(&mut t, "all up", &self.now, None);
        for s in &self.scenarios {
            let label: Vec<String> = s.failed.iter().map(|id| format!("n{id}")).collect();
            row(
                &mut t,
                &format!("-{}", label.join(",-")),
                &s.counts,
                Some(s.max_multiplier),
            );
        }
        if let Some(w) = self.worst() {
            let node = w
                .counts
                .iter()
                .map(|(id, &c)| (multiplier(self.now[id], c), *id))
                .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
                .1;
            let failed: Vec<String> = w.failed.iter().map(|id| format!("n{id}")).collect();
            let verb = if failed.len() == 1 { "fails" } else { "fail" };
            let _ = writeln!(
                t,
                "worst case load multiplier: {:.2} (n{node} when {} {verb})",
                w.max_multiplier,
                failed.join(" and ")
            );
        }
        t
    }

    /// The plan as JSON.
    pub fn json(&self) -> serde_json::Value {
        let counts = |c: &BTreeMap<u32, usize>| -> serde_json::Map<String, serde_json::Value> {
            c.iter()
                .map(|(id, n)| (id.to_string(), (*n).into()))
                .collect()
        };
        let finite = |m: f64| {
            if m.is_finite() {
                serde_json::json!(m)
            } else {
                serde_json::Value::Null
            }
        };
        serde_json::json!({
            "vips": self.vips,
            "nodes": self.members.iter().map(|m| serde_json::json!({"id": m.id, "weight": m.weight})).collect::<Vec<_>>(),
            "now": counts(&self.now),
            "scenarios": self.scenarios.iter().map(|s| serde_json::json!({
                "failed": s.failed,
                "counts": counts(&s.counts),
                "max_multiplier": finite(s.max_multiplier),
            })).collect::<Vec<_>>(),
            "worst_multiplier": self.worst().map(|w| finite(w.max_multiplier)),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn pool(n: u32) -> Vec<IpAddr> {
        (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0xC000_02C8 + i)))
            .collect()
    }

    fn nodes(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member {
                id: i as u32 + 1,
                weight: w,
            })
            .collect()
    }

    #[test]
    fn three_vips_on_two_nodes_shows_the_imbalance() {
        let p = plan(&pool(3), &nodes(&[1, 1]), 1, true).unwrap();
        assert_eq!(p.now, BTreeMap::from([(1, 2), (2, 1)]));
        assert_eq!(p.scenarios.len(), 2);
        assert_eq!(p.scenarios[0].failed, vec![1]);
        assert_eq!(p.scenarios[0].counts, BTreeMap::from([(2, 3)]));
        assert_eq!(p.scenarios[0].max_multiplier, 3.0);
        assert_eq!(p.scenarios[1].max_multiplier, 1.5);
        assert_eq!(p.worst().unwrap().failed, vec![1]);
        let table = p.table();
        assert!(
            table.contains("worst case load multiplier: 3.00 (n2 when n1 fails)"),
            "{table}"
        );
        assert_eq!(p.json()["worst_multiplier"], 3.0);
    }

    #[test]
    fn every_combination_up_to_k() {
        let p = plan(&pool(12), &nodes(&[1, 1, 1, 1]), 2, true).unwrap();
        assert_eq!(p.scenarios.len(), 4 + 6);
        assert_eq!(p.scenarios[4].failed, vec![1, 2]);
        assert_eq!(p.scenarios[9].failed, vec![3, 4]);
        // Two of four fail: the survivors carry 6 each, twice their 3.
        assert!(p.scenarios[4..].iter().all(|s| s.max_multiplier == 2.0));
    }

    #[test]
    fn idle_node_that_must_take_vips_is_infinite() {
        let p = plan(&pool(1), &nodes(&[1, 1]), 1, true).unwrap();
        assert_eq!(p.worst().unwrap().max_multiplier, f64::INFINITY);
        assert!(p.json()["worst_multiplier"].is_null());
    }

    #[test]
    fn bad_requests_are_errors() {
        assert_eq!(plan(&pool(3), &[], 0, true), Err(PlanError::NoNodes));
        assert_eq!(
            plan(&pool(3), &nodes(&[1, 1]), 2, true),
            Err(PlanError::TooManyFailures { k: 2, nodes: 2 })
        );
        assert!(matches!(
            plan(&pool(3), &nodes(&[1; 64]), 10, true),
            Err(PlanError::TooManyScenarios(_))
        ));
    }
}
