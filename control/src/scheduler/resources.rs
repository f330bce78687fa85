//! The resources the scheduler counts: CPU (millicores), memory (bytes) and the pod count.
//!
//! Extended resources (`nvidia.com/gpu`, …) and ephemeral storage are not counted yet; a pod
//! asking for them is placed as if it had not.

use std::ops::{Add, AddAssign, SubAssign};

use serde_json::{Map, Value};

use super::quantity;

/// An amount of each counted resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Number of pods.
    pub pods: i64,
}

/// What kube-scheduler assumes a container without a CPU request uses, for scoring only
/// (`DefaultMilliCPURequest`): 0.1 core.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// What kube-scheduler assumes a container without a memory request uses, for scoring only
/// (`DefaultMemoryRequest`): 200 MiB.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

impl Resources {
    /// Reads a `ResourceList` (`{"cpu": "2", "memory": "4Gi", "pods": "110"}`); unparsable or
    /// absent entries count as zero.
    pub fn from_list(list: Option<&Map<String, Value>>) -> Resources {
        let Some(list) = list else {
            return Resources::default();
        };
        let get = |k: &str| list.get(k).and_then(quantity::from_json);
        Resources {
            milli_cpu: get("cpu").map_or(0, |q| q.milli_value()),
            memory: get("memory").map_or(0, |q| q.value()),
            pods: get("pods").map_or(0, |q| q.value()),
        }
    }

    /// The per-resource maximum.
    pub fn max(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
            pods: self.pods.max(other.pods),
        }
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(o.milli_cpu),
            memory: self.memory.saturating_add(o.memory),
            pods: self.pods.saturating_add(o.pods),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        *self = *self + o;
    }
}

impl SubAssign for Resources {
    fn sub_assign(&mut self, o: Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory = self.memory.saturating_sub(o.memory);
        self.pods = self.pods.saturating_sub(o.pods);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_resource_list_is_read_into_millicores_bytes_and_pods() {
        let list = json!({"cpu": "1500m", "memory": "1Gi", "pods": "110", "nvidia.com/gpu": "1"});
        assert_eq!(
            Resources::from_list(list.as_object()),
            Resources {
                milli_cpu: 1500,
                memory: 1 << 30,
                pods: 110
            }
        );
        assert_eq!(Resources::from_list(None), Resources::default());
        assert_eq!(
            Resources::from_list(json!({"cpu": "bogus"}).as_object()),
            Resources::default()
        );
    }
}
