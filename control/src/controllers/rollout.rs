//! The arithmetic of Deployment rollouts, as pure functions (Kubernetes'
//! `deployment/util`): resolving `maxSurge`/`maxUnavailable`, how far the new ReplicaSet may
//! grow, how far the old ones may shrink, and the `pod-template-hash`.

use serde_json::Value;

/// Resolves an int-or-percent against `total`: a number as is; a percentage of `total`
/// rounded up (`round_up`, surge) or down (unavailability). Invalid values count as 0.
pub fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0).max(0),
        Value::String(s) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
        {
            Some(p) => {
                let x = p.max(0) * total;
                if round_up { (x + 99) / 100 } else { x / 100 }
            }
            None => s.trim().parse::<i64>().unwrap_or(0).max(0),
        },
        _ => 0,
    }
}

/// `maxSurge` and `maxUnavailable` for `replicas` (Kubernetes' `ResolveFenceposts`): surge
/// rounds up, unavailability down, and both being 0 would deadlock, so unavailability is
/// then 1.
pub fn fenceposts(max_surge: &Value, max_unavailable: &Value, replicas: i64) -> (i64, i64) {
    let surge = int_or_percent(max_surge, replicas, true);
    let mut unavailable = int_or_percent(max_unavailable, replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// The new ReplicaSet's next size in a rolling update: `new_replicas` now, `total` the
/// sum of every ReplicaSet's `spec.replicas`.
pub fn new_replica_set_size(replicas: i64, surge: i64, new_replicas: i64, total: i64) -> i64 {
    if new_replicas >= replicas {
        return replicas;
    }
    let max_total = replicas + surge;
    if total >= max_total {
        return new_replicas;
    }
    let up = (max_total - total).min(replicas - new_replicas);
    new_replicas + up.max(0)
}

/// One old ReplicaSet as the scale-down sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldSet {
    /// `spec.replicas`.
    pub replicas: i64,
    /// `status.availableReplicas`.
    pub available: i64,
}

/// How many pods to take from each old ReplicaSet (oldest first in `old`) in one step of a
/// rolling update (Kubernetes' `reconcileOldReplicaSets`): first unhealthy pods, as far as
/// keeping `replicas - unavailable` available allows, then available ones while more than
/// that many are available. `new` is the new set's size and available count.
pub fn old_scale_down(replicas: i64, unavailable: i64, new: &OldSet, old: &[OldSet]) -> Vec<i64> {
    let mut take = vec![0i64; old.len()];
    let old_total: i64 = old.iter().map(|o| o.replicas).sum();
    if old_total == 0 {
        return take;
    }
    let all = old_total + new.replicas;
    let min_available = replicas - unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut max_down = all - min_available - new_unavailable;
    if max_down <= 0 {
        return take;
    }
    // Unhealthy pods first: they do not count toward availability.
    for (i, o) in old.iter().enumerate() {
        if max_down == 0 {
            break;
        }
        let unhealthy = (o.replicas - o.available).max(0);
        let n = unhealthy.min(max_down);
        take[i] += n;
        max_down -= n;
    }
    // Then available pods, keeping min_available.
    let available: i64 =
        old.iter().map(|o| o.available.min(o.replicas)).sum::<i64>() + new.available;
    let mut down = (available - min_available).max(0);
    for (i, o) in old.iter().enumerate() {
        if down == 0 {
            break;
        }
        let left = o.replicas - take[i];
        let n = left.min(down);
        take[i] += n;
        down -= n;
    }
    take
}

/// One active ReplicaSet as proportional scaling sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaledSet {
    /// `spec.replicas`.
    pub replicas: i64,
    /// Its `deployment.kubernetes.io/max-replicas` annotation: the Deployment's
    /// `replicas + maxSurge` when the set was last scaled.
    pub max_replicas: Option<i64>,
    /// `metadata.creationTimestamp` (RFC 3339, so it orders as text), for ties.
    pub created: String,
}

/// The new sizes of a Deployment's active ReplicaSets (`sets`, any order) when the
/// Deployment is scaled to `replicas` in the middle of a rolling update (Kubernetes'
/// `scale` with `GetProportion`): the replicas to add or remove, up to
/// `replicas + surge` in all, are spread in proportion to each set's share of the
/// previous `max-replicas`; the largest set (newer first when growing, older first when
/// shrinking) takes what rounding leaves over. `status_replicas` stands in for a missing
/// annotation.
pub fn proportional_sizes(
    replicas: i64,
    surge: i64,
    status_replicas: i64,
    sets: &[ScaledSet],
) -> Vec<i64> {
    let total: i64 = sets.iter().map(|s| s.replicas).sum();
    let allowed = if replicas > 0 { replicas + surge } else { 0 };
    let to_add = allowed - total;
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&sets[a], &sets[b]);
        y.replicas.cmp(&x.replicas).then_with(|| {
            if to_add > 0 {
                y.created.cmp(&x.created)
            } else {
                x.created.cmp(&y.created)
            }
        })
    });
    let mut sizes: Vec<i64> = sets.iter().map(|s| s.replicas).collect();
    if to_add == 0 {
        return sizes;
    }
    let mut added = 0i64;
    for &i in &order {
        let s = &sets[i];
        if s.replicas == 0 || to_add == added {
            continue;
        }
        let fraction = if replicas == 0 {
            -s.replicas
        } else {
            let before = s
                .max_replicas
                .filter(|m| *m > 0)
                .unwrap_or(status_replicas)
                .max(1);
            // Go's math.Round: halves away from zero.
            let exact = (s.replicas * allowed) as f64 / before as f64;
            exact.round() as i64 - s.replicas
        };
        let left = to_add - added;
        let p = if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        };
        sizes[i] += p;
        added += p;
    }
    if let Some(&first) = order.first() {
        sizes[first] = (sizes[first] + to_add - added).max(0);
    }
    sizes
}

/// The `pod-template-hash` of a template: FNV-1a over its JSON (with `collision_count`),
/// spelled with Kubernetes' safe alphabet (no vowels, no look-alike characters).
pub fn template_hash(template: &Value, collision_count: i64) -> String {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(super::deployment::HASH_LABEL);
    }
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    eat(canonical(&t).as_bytes());
    if collision_count > 0 {
        eat(&collision_count.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// JSON with object keys sorted, so equal templates hash equally whatever their key order.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Whether two pod templates are the same once the `pod-template-hash` label is ignored
/// (Kubernetes' `EqualIgnoreHash`).
pub fn templates_equal(a: &Value, b: &Value) -> bool {
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(l) = t["metadata"]["labels"].as_object_mut() {
            l.remove(super::deployment::HASH_LABEL);
        }
        canonical(&t)
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        assert_eq!(fenceposts(&json!("25%"), &json!("25%"), 10), (3, 2));
        assert_eq!(fenceposts(&json!("25%"), &json!("25%"), 3), (1, 0));
        assert_eq!(fenceposts(&json!(0), &json!(0), 3), (0, 1));
        assert_eq!(fenceposts(&json!(2), &json!("50%"), 5), (2, 2));
        assert_eq!(fenceposts(&json!("100%"), &json!(1), 4), (4, 1));
    }

    #[test]
    fn the_new_set_grows_within_the_surge() {
        // 4 replicas, surge 1: all on old → new may have 1.
        assert_eq!(new_replica_set_size(4, 1, 0, 4), 1);
        // At the surge limit: no growth.
        assert_eq!(new_replica_set_size(4, 1, 1, 5), 1);
        // Old shrank by two: grow by two.
        assert_eq!(new_replica_set_size(4, 1, 1, 3), 3);
        // Never beyond replicas, and shrink back when above.
        assert_eq!(new_replica_set_size(4, 10, 0, 4), 4);
        assert_eq!(new_replica_set_size(4, 1, 6, 6), 4);
    }

    #[test]
    fn old_sets_shrink_only_while_enough_pods_stay_available() {
        let s = |replicas, available| OldSet {
            replicas,
            available,
        };
        // 3 replicas, maxUnavailable 0, surge 1: new has 1 not yet available → nothing.
        assert_eq!(old_scale_down(3, 0, &s(1, 0), &[s(3, 3)]), vec![0]);
        // New pod became available → one old pod may go.
        assert_eq!(old_scale_down(3, 0, &s(1, 1), &[s(3, 3)]), vec![1]);
        // maxUnavailable 1: one may go at once even before the new one is ready.
        assert_eq!(old_scale_down(3, 1, &s(0, 0), &[s(3, 3)]), vec![1]);
        // Unhealthy old pods go first, oldest set first.
        assert_eq!(
            old_scale_down(4, 1, &s(0, 0), &[s(2, 0), s(2, 2)]),
            vec![1, 0]
        );
        assert_eq!(
            old_scale_down(4, 2, &s(0, 0), &[s(2, 0), s(2, 2)]),
            vec![2, 0]
        );
        assert_eq!(old_scale_down(3, 1, &s(3, 3), &[]), Vec::<i64>::new());
    }

    fn set(replicas: i64, max_replicas: i64, created: &str) -> ScaledSet {
        ScaledSet {
            replicas,
            max_replicas: Some(max_replicas),
            created: created.into(),
        }
    }

    #[test]
    fn scaling_in_the_middle_of_a_rollout_spreads_replicas_proportionally() {
        // Kubernetes' documented example: 10 replicas, maxSurge 3, stuck with 8 old and 5
        // new; scaled to 15 (max 18): 3 more old, 2 more new.
        let old = set(8, 13, "2024-01-01T00:00:00Z");
        let new = set(5, 13, "2024-01-02T00:00:00Z");
        assert_eq!(
            proportional_sizes(15, 3, 13, &[old.clone(), new.clone()]),
            vec![11, 7]
        );
        // Scaling back down to 10 from there (18 → 13) shrinks both in proportion.
        let old = set(11, 18, "2024-01-01T00:00:00Z");
        let new = set(7, 18, "2024-01-02T00:00:00Z");
        assert_eq!(proportional_sizes(10, 3, 18, &[old, new]), vec![8, 5]);
        // To zero: everything goes.
        let a = set(3, 5, "2024-01-01T00:00:00Z");
        let b = set(2, 5, "2024-01-02T00:00:00Z");
        assert_eq!(proportional_sizes(0, 1, 5, &[a, b]), vec![0, 0]);
        // Equal sizes: the leftover goes to the newer set when growing, the older when
        // shrinking.
        let a = set(1, 2, "2024-01-01T00:00:00Z");
        let b = set(1, 2, "2024-01-02T00:00:00Z");
        assert_eq!(
            proportional_sizes(4, 1, 2, &[a.clone(), b.clone()]),
            vec![2, 3]
        );
        let a = set(3, 6, "2024-01-01T00:00:00Z");
        let b = set(3, 6, "2024-01-02T00:00:00Z");
        assert_eq!(proportional_sizes(2, 1, 6, &[a, b]), vec![1, 2]);
        // Without the annotation the Deployment's status.replicas stands in.
        let a = ScaledSet {
            replicas: 2,
            max_replicas: None,
            created: "a".into(),
        };
        let b = ScaledSet {
            replicas: 2,
            max_replicas: None,
            created: "b".into(),
        };
        assert_eq!(proportional_sizes(7, 1, 4, &[a, b]), vec![4, 4]);
        // Nothing to add: sizes stay.
        assert_eq!(
            proportional_sizes(4, 1, 5, &[set(3, 5, "a"), set(2, 5, "b")]),
            vec![3, 2]
        );
    }

    #[test]
    fn template_hashes_ignore_the_hash_label_and_key_order_and_use_the_safe_alphabet() {
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}});
        let b = json!({"spec": {"containers": [{"image": "v1", "name": "c"}]}, "metadata": {"labels": {"app": "x", "pod-template-hash": "zz"}}});
        let c = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "v2"}]}});
        assert_eq!(template_hash(&a, 0), template_hash(&b, 0));
        assert_ne!(template_hash(&a, 0), template_hash(&c, 0));
        assert_ne!(template_hash(&a, 0), template_hash(&a, 1));
        assert!(
            template_hash(&a, 0)
                .chars()
                .all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch))
        );
        assert!(templates_equal(&a, &b));
        assert!(!templates_equal(&a, &c));
    }
}
