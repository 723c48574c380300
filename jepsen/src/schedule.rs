//! The nemesis schedule: a pure function of (seed, enabled families, node
//! count, time limit, interval). Every random choice that does not depend on
//! the running cluster (partition mode and node order, kill targets, clock
//! offsets) is fixed here, so a seed names the same experiment. Only "the
//! leader" is resolved at run time.

use anyhow::{bail, Result};
use serde::Serialize;

use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Partition,
    Kill,
    Pause,
    Clock,
    Member,
    PartKill,
    PauseKill,
    /// Cut a whole zone off (`--zones`; not in `all`, so that the seeds of
    /// `all` keep their schedules).
    Zone,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Partition,
        Family::Kill,
        Family::Pause,
        Family::Clock,
        Family::Member,
        Family::PartKill,
        Family::PauseKill,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Family::Partition => "partition",
            Family::Kill => "kill",
            Family::Pause => "pause",
            Family::Clock => "clock",
            Family::Member => "member",
            Family::PartKill => "part-kill",
            Family::PauseKill => "pause-kill",
            Family::Zone => "zone",
        }
    }

    /// Parses `partition,kill,pause,clock,member,part-kill,pause-kill`, `all`
    /// or `none`. Composites are added when both their parts are enabled
    /// (partition+kill → part-kill, pause+kill → pause-kill), as Jepsen's
    /// combined nemesis packages do.
    pub fn parse_list(s: &str) -> Result<Vec<Family>> {
        let mut out: Vec<Family> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let fam = match part {
                "none" => continue,
                "all" => {
                    out.extend(Family::ALL);
                    continue;
                }
                "membership" => Family::Member,
                "zone" => Family::Zone,
                other => match Family::ALL.iter().find(|f| f.name() == other) {
                    Some(f) => *f,
                    None => bail!("unknown nemesis {other:?}; known: partition, kill, pause, clock, member, part-kill, pause-kill, zone, all, none"),
                },
            };
            out.push(fam);
        }
        let has = |f: Family, v: &Vec<Family>| v.contains(&f);
        if has(Family::Partition, &out) && has(Family::Kill, &out) {
            out.push(Family::PartKill);
        }
        if has(Family::Pause, &out) && has(Family::Kill, &out) {
            out.push(Family::PauseKill);
        }
        let mut dedup = Vec::new();
        for f in out {
            if !dedup.contains(&f) {
                dedup.push(f);
            }
        }
        Ok(dedup)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartMode {
    Halves,
    IsolateOne,
    IsolateLeader,
    MajoritiesRing,
    Bridge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    One,
    Minority,
    Leader,
    All,
}

/// One fault with its random choices fixed. Node numbers are 0-based
/// indices here (node i is `n{i+1}`). `Zone` cuts off the zone of
/// `order[0]` (all its links, see `crate::zones`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    Partition { mode: PartMode, order: Vec<usize> },
    Kill { target: Target, order: Vec<usize> },
    Pause { target: Target, order: Vec<usize> },
    ClockBump { nodes: Vec<usize>, offsets_ms: Vec<i64> },
    ClockStrobe { nodes: Vec<usize>, delta_ms: i64, period_ms: u64 },
    Member { order: Vec<usize> },
    Zone { order: Vec<usize> },
    Composite { faults: Vec<Fault> },
}

impl Fault {
    /// The nemesis `f` name as it appears in the history (`start-<name>`).
    pub fn name(&self) -> String {
        match self {
            Fault::Partition { .. } => "partition".into(),
            Fault::Kill { .. } => "kill".into(),
            Fault::Pause { .. } => "pause".into(),
            Fault::ClockBump { .. } => "clock-bump".into(),
            Fault::ClockStrobe { .. } => "clock-strobe".into(),
            Fault::Member { .. } => "member".into(),
            Fault::Zone { .. } => "zone".into(),
            Fault::Composite { faults } => {
                faults.iter().map(|f| f.name()).collect::<Vec<_>>().join("+")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Start { fault: Fault },
    Stop,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// Milliseconds after the start of the main phase.
    pub at_ms: u64,
    #[serde(flatten)]
    pub action: Action,
}

fn order(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut v);
    v
}

fn fault_for(rng: &mut Rng, fam: Family, n: usize) -> Fault {
    match fam {
        Family::Partition => {
            let modes = [
                PartMode::Halves,
                PartMode::IsolateOne,
                PartMode::IsolateLeader,
                PartMode::MajoritiesRing,
                PartMode::Bridge,
            ];
            Fault::Partition { mode: *rng.pick(&modes), order: order(rng, n) }
        }
        Family::Kill => {
            let t = [Target::One, Target::Minority, Target::Leader, Target::All];
            Fault::Kill { target: *rng.pick(&t), order: order(rng, n) }
        }
        Family::Pause => {
            let t = [Target::One, Target::Minority, Target::Leader];
            Fault::Pause { target: *rng.pick(&t), order: order(rng, n) }
        }
        Family::Clock => {
            let o = order(rng, n);
            let k = 1 + rng.below(n as u64) as usize;
            let nodes: Vec<usize> = o[..k].to_vec();
            if rng.chance(0.5) {
                let offsets_ms = nodes
                    .iter()
                    .map(|_| {
                        let mag = rng.range_i64(100, 120_000);
                        if rng.chance(0.5) {
                            mag
                        } else {
                            -mag
                        }
                    })
                    .collect();
                Fault::ClockBump { nodes, offsets_ms }
            } else {
                Fault::ClockStrobe {
                    nodes,
                    delta_ms: rng.range_i64(200, 5_000),
                    period_ms: rng.range_i64(10, 200) as u64,
                }
            }
        }
        Family::Member => Fault::Member { order: order(rng, n) },
        Family::Zone => Fault::Zone { order: order(rng, n) },
        Family::PartKill => {
            let p = fault_for(rng, Family::Partition, n);
            let t = [Target::One, Target::Minority, Target::Leader];
            let k = Fault::Kill { target: *rng.pick(&t), order: order(rng, n) };
            Fault::Composite { faults: vec![p, k] }
        }
        Family::PauseKill => {
            let p = fault_for(rng, Family::Pause, n);
            let t = [Target::One, Target::Minority, Target::Leader];
            let k = Fault::Kill { target: *rng.pick(&t), order: order(rng, n) };
            Fault::Composite { faults: vec![p, k] }
        }
    }
}

/// The schedule: quiet for ~one interval, then alternately start a fault of
/// a randomly chosen enabled family and stop it, each ~interval (±50%).
pub fn generate(
    seed: u64,
    families: &[Family],
    n: usize,
    time_limit_ms: u64,
    interval_ms: u64,
) -> Vec<Step> {
    let mut rng = Rng::new(seed).fork(0x5c4e_d01e);
    let fams: Vec<Family> =
        families.iter().copied().filter(|f| *f != Family::Member || n >= 3).collect();
    let mut steps = Vec::new();
    if fams.is_empty() || interval_ms == 0 {
        return steps;
    }
    let jitter = |rng: &mut Rng| interval_ms / 2 + rng.below(interval_ms.max(1));
    let mut t = jitter(&mut rng);
    while t < time_limit_ms {
        let fam = *rng.pick(&fams);
        steps.push(Step { at_ms: t, action: Action::Start { fault: fault_for(&mut rng, fam, n) } });
        t += jitter(&mut rng);
        steps.push(Step { at_ms: t.min(time_limit_ms), action: Action::Stop });
        t += jitter(&mut rng);
    }
    steps
}

/// Which nodes (0-based) each node drops traffic from. Always symmetric.
pub fn grudge(mode: PartMode, order: &[usize], n: usize, leader: Option<usize>) -> Vec<Vec<usize>> {
    let mut g: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut cut = |a: &[usize], b: &[usize], g: &mut Vec<Vec<usize>>| {
        for &x in a {
            for &y in b {
                if x != y {
                    g[x].push(y);
                    g[y].push(x);
                }
            }
        }
    };
    let all: Vec<usize> = order.to_vec();
    match mode {
        PartMode::Halves => {
            let (a, b) = all.split_at(n / 2);
            cut(a, b, &mut g);
        }
        PartMode::IsolateOne | PartMode::IsolateLeader => {
            let x = if mode == PartMode::IsolateLeader { leader.unwrap_or(all[0]) } else { all[0] };
            let rest: Vec<usize> = all.iter().copied().filter(|&y| y != x).collect();
            cut(&[x], &rest, &mut g);
        }
        PartMode::Bridge => bridge(&all, &mut g, &mut cut),
        PartMode::MajoritiesRing => {
            if n < 4 {
                // With 3 nodes the only ring of distinct majorities is a bridge.
                bridge(&all, &mut g, &mut cut);
            } else {
                let m = n / 2 + 1;
                let k = (m - 1).div_ceil(2);
                for p in 0..n {
                    for q in 0..n {
                        let d = (p as isize - q as isize).rem_euclid(n as isize) as usize;
                        let dist = d.min(n - d);
                        if dist > k {
                            g[all[p]].push(all[q]);
                        }
                    }
                }
            }
        }
    }
    for v in g.iter_mut() {
        v.sort();
        v.dedup();
    }
    g
}

fn bridge(
    all: &[usize],
    g: &mut Vec<Vec<usize>>,
    cut: &mut impl FnMut(&[usize], &[usize], &mut Vec<Vec<usize>>),
) {
    let n = all.len();
    if n < 3 {
        return;
    }
    let rest = &all[1..];
    let (a, b) = rest.split_at((n - 1) / 2);
    cut(a, b, g);
}

/// Resolves a kill/pause target to node indices.
pub fn targets(target: Target, order: &[usize], leader: Option<usize>) -> Vec<usize> {
    let n = order.len();
    match target {
        Target::One => vec![order[0]],
        Target::Minority => order[..((n - 1) / 2).max(1)].to_vec(),
        Target::Leader => vec![leader.unwrap_or(order[0])],
        Target::All => order.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the same seed yields the same schedule and another seed a
    /// different one, and that start/stop alternate inside the time limit.
    #[test]
    fn schedule_is_seeded_and_alternates() {
        let fams = Family::parse_list("partition,kill,pause,clock,member").unwrap();
        let a = generate(42, &fams, 5, 60_000, 10_000);
        let b = generate(42, &fams, 5, 60_000, 10_000);
        let c = generate(43, &fams, 5, 60_000, 10_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() >= 4);
        for (i, s) in a.iter().enumerate() {
            assert!(s.at_ms <= 60_000);
            assert_eq!(matches!(s.action, Action::Start { .. }), i % 2 == 0);
        }
        assert!(matches!(a.last().unwrap().action, Action::Stop));
    }

    /// Proves a long schedule mixes every enabled family (incl. the
    /// auto-added composites) and never uses a disabled one.
    #[test]
    fn schedule_mixes_enabled_families_only() {
        let fams = Family::parse_list("partition,kill").unwrap();
        assert_eq!(fams, vec![Family::Partition, Family::Kill, Family::PartKill]);
        let s = generate(7, &fams, 3, 3_600_000, 10_000);
        let names: std::collections::HashSet<String> = s
            .iter()
            .filter_map(|s| match &s.action {
                Action::Start { fault } => Some(fault.name()),
                _ => None,
            })
            .collect();
        assert!(
            names.contains("partition")
                && names.contains("kill")
                && names.contains("partition+kill"),
            "{names:?}"
        );
        assert!(!names
            .iter()
            .any(|n| n.contains("pause") || n.contains("clock") || n.contains("member")));
    }

    /// Proves unknown nemesis names are rejected and `none` gives no steps.
    #[test]
    fn schedule_parse_rejects_unknown_and_none_is_empty() {
        assert!(Family::parse_list("partition,flood").is_err());
        let none = Family::parse_list("none").unwrap();
        assert!(generate(1, &none, 3, 60_000, 10_000).is_empty());
        assert_eq!(Family::parse_list("all").unwrap().len(), 7);
    }

    fn sees_majority(g: &[Vec<usize>], n: usize) -> Vec<bool> {
        g.iter().map(|d| n - d.len() > n / 2).collect()
    }

    /// Proves every grudge is symmetric and has the shape of its mode:
    /// halves splits n/2 | rest, isolate cuts one node from all, bridge keeps
    /// one node connected to both sides, majorities-ring lets each node see a
    /// majority while no two see the same one.
    #[test]
    fn schedule_grudges_have_their_shapes() {
        for n in [3usize, 4, 5, 7] {
            let order: Vec<usize> = (0..n).rev().collect();
            for mode in [
                PartMode::Halves,
                PartMode::IsolateOne,
                PartMode::IsolateLeader,
                PartMode::MajoritiesRing,
                PartMode::Bridge,
            ] {
                let g = grudge(mode, &order, n, Some(1));
                for (x, d) in g.iter().enumerate() {
                    assert!(!d.contains(&x));
                    for &y in d {
                        assert!(g[y].contains(&x), "{mode:?} n={n} not symmetric");
                    }
                }
                assert!(g.iter().any(|d| !d.is_empty()), "{mode:?} n={n} cuts nothing");
            }
            let iso = grudge(PartMode::IsolateLeader, &order, n, Some(1));
            assert_eq!(iso[1].len(), n - 1);
            let halves = grudge(PartMode::Halves, &order, n, None);
            assert_eq!(halves[order[0]].len(), n - n / 2);
            let bridge = grudge(PartMode::Bridge, &order, n, None);
            assert!(bridge[order[0]].is_empty(), "bridge node sees all");
            let ring = grudge(PartMode::MajoritiesRing, &order, n, None);
            assert!(sees_majority(&ring, n).iter().all(|b| *b), "n={n} {ring:?}");
            let views: std::collections::HashSet<Vec<usize>> = ring.iter().cloned().collect();
            assert!(views.len() > 1);
        }
    }

    /// Proves kill/pause targets: one, a minority (never a majority), the
    /// leader, all.
    #[test]
    fn schedule_targets_resolve() {
        let order = vec![4, 2, 0, 1, 3];
        assert_eq!(targets(Target::One, &order, None), vec![4]);
        assert_eq!(targets(Target::Minority, &order, None), vec![4, 2]);
        assert_eq!(targets(Target::Leader, &order, Some(3)), vec![3]);
        assert_eq!(targets(Target::All, &order, None).len(), 5);
        assert_eq!(targets(Target::Minority, &[2, 0, 1], None), vec![2]);
    }
}
