//! Typed Docker Engine API request bodies, API 1.41 through 1.47 (Docker
//! 20.10 to 27.x), mirroring the Go types the daemon decodes them into.
//!
//! Every field is an `Option` so that absent and `null` both decode to
//! `None` and are left out when re-encoded; the daemon then sees Go's zero
//! value, which is also what it makes of an absent or `null` field. Go
//! structs embedded in others (`Resources` in `HostConfig`, `Config` in the
//! create request) are written out field by field, because serde's
//! `flatten` cannot be combined with `deny_unknown_fields`.
//!
//! Where Go's type accepts fewer values than a loose JSON type would, the
//! Rust type is the narrow one too (`[u64; 2]` for Go's `[2]uint`, which
//! silently drops extra elements; typed structs instead of free-form JSON
//! for nested objects), so nothing passes through unchecked.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// A JSON object of strings, e.g. `Labels`. Go decodes these keys exactly.
pub type StringMap = BTreeMap<String, String>;

/// Declares a request-body struct: each `"JsonName" => rust_name: Type`
/// becomes `pub rust_name: Option<Type>` with that exact JSON name, `null`
/// and absent both reading as `None`, and `None` left out when encoding.
/// Any other key (including a different capitalization) is an error.
///
/// serde's derive is used through `remote = "Self"` so that the
/// `Deserialize` impl can put [`ObjectOnly`] in front of it: the derive on
/// its own also accepts a JSON array, filling fields by position, which Go
/// rejects for a struct.
macro_rules! body_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $json:literal => $field:ident: $ty:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(remote = "Self", deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(rename = $json, default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $name::serialize(self, serializer)
            }
        }

        impl Derived for $name {
            fn derived<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $name::deserialize(deserializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_struct(
                    stringify!($name),
                    &[$($json),*],
                    ObjectOnly::<$name>(PhantomData),
                )
            }
        }
    };
}

/// The serde-derived decoder of a [`body_struct!`] type.
trait Derived: Sized {
    fn derived<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

/// Hands a JSON object to the derived decoder and refuses everything else.
struct ObjectOnly<T>(PhantomData<T>);

impl<'de, T: Derived> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::derived(de::value::MapAccessDeserializer::new(map))
    }
}

body_struct! {
    /// `POST /containers/create`: Go's `container.Config` with `HostConfig`
    /// and `NetworkingConfig` beside it. HostConfig fields sent at the top
    /// level (which engines before 27.0.1 still honour) are unknown fields
    /// here.
    pub struct ContainerCreate {
        "Hostname" => hostname: String,
        "Domainname" => domainname: String,
        "User" => user: String,
        "AttachStdin" => attach_stdin: bool,
        "AttachStdout" => attach_stdout: bool,
        "AttachStderr" => attach_stderr: bool,
        "ExposedPorts" => exposed_ports: BTreeMap<String, EmptyObject>,
        "Tty" => tty: bool,
        "OpenStdin" => open_stdin: bool,
        "StdinOnce" => stdin_once: bool,
        "Env" => env: Vec<String>,
        #[serde(deserialize_with = "str_or_vec")]
        "Cmd" => cmd: Vec<String>,
        "Healthcheck" => healthcheck: HealthConfig,
        "ArgsEscaped" => args_escaped: bool,
        "Image" => image: String,
        "Volumes" => volumes: BTreeMap<String, EmptyObject>,
        "WorkingDir" => working_dir: String,
        #[serde(deserialize_with = "str_or_vec")]
        "Entrypoint" => entrypoint: Vec<String>,
        "NetworkDisabled" => network_disabled: bool,
        "MacAddress" => mac_address: String,
        "OnBuild" => on_build: Vec<String>,
        "Labels" => labels: StringMap,
        "StopSignal" => stop_signal: String,
        "StopTimeout" => stop_timeout: i64,
        #[serde(deserialize_with = "str_or_vec")]
        "Shell" => shell: Vec<String>,
        "HostConfig" => host_config: HostConfig,
        "NetworkingConfig" => networking_config: NetworkingConfig,
    }
}

body_struct! {
    /// The value of an `ExposedPorts` or `Volumes` entry. Go's `struct{}`
    /// would ignore any keys in it; only `{}` is accepted here.
    pub struct EmptyObject {}
}

body_struct! {
    /// Go's `container.HealthConfig`. Durations are integer nanoseconds.
    pub struct HealthConfig {
        "Test" => test: Vec<String>,
        "Interval" => interval: i64,
        "Timeout" => timeout: i64,
        "StartPeriod" => start_period: i64,
        "StartInterval" => start_interval: i64,
        "Retries" => retries: i64,
    }
}

body_struct! {
    /// Go's `container.HostConfig`, with the embedded `Resources` fields
    /// inline (keep them in step with [`ContainerUpdate`]).
    pub struct HostConfig {
        "Binds" => binds: Vec<String>,
        "ContainerIDFile" => container_id_file: String,
        "LogConfig" => log_config: LogConfig,
        "NetworkMode" => network_mode: String,
        "PortBindings" => port_bindings: BTreeMap<String, Option<Vec<PortBinding>>>,
        "RestartPolicy" => restart_policy: RestartPolicy,
        "AutoRemove" => auto_remove: bool,
        "VolumeDriver" => volume_driver: String,
        "VolumesFrom" => volumes_from: Vec<String>,
        "ConsoleSize" => console_size: [u64; 2],
        "Annotations" => annotations: StringMap,
        #[serde(deserialize_with = "str_or_vec")]
        "CapAdd" => cap_add: Vec<String>,
        #[serde(deserialize_with = "str_or_vec")]
        "CapDrop" => cap_drop: Vec<String>,
        "CgroupnsMode" => cgroupns_mode: String,
        "Dns" => dns: Vec<String>,
        "DnsOptions" => dns_options: Vec<String>,
        "DnsSearch" => dns_search: Vec<String>,
        "ExtraHosts" => extra_hosts: Vec<String>,
        "GroupAdd" => group_add: Vec<String>,
        "IpcMode" => ipc_mode: String,
        "Cgroup" => cgroup: String,
        "Links" => links: Vec<String>,
        "OomScoreAdj" => oom_score_adj: i64,
        "PidMode" => pid_mode: String,
        "Privileged" => privileged: bool,
        "PublishAllPorts" => publish_all_ports: bool,
        "ReadonlyRootfs" => readonly_rootfs: bool,
        "SecurityOpt" => security_opt: Vec<String>,
        "StorageOpt" => storage_opt: StringMap,
        "Tmpfs" => tmpfs: StringMap,
        "UTSMode" => uts_mode: String,
        "UsernsMode" => userns_mode: String,
        "ShmSize" => shm_size: i64,
        "Sysctls" => sysctls: StringMap,
        "Runtime" => runtime: String,
        "Isolation" => isolation: String,

        // Resources
        "CpuShares" => cpu_shares: i64,
        "Memory" => memory: i64,
        "NanoCpus" => nano_cpus: i64,
        "CgroupParent" => cgroup_parent: String,
        "BlkioWeight" => blkio_weight: u16,
        "BlkioWeightDevice" => blkio_weight_device: Vec<WeightDevice>,
        "BlkioDeviceReadBps" => blkio_device_read_bps: Vec<ThrottleDevice>,
        "BlkioDeviceWriteBps" => blkio_device_write_bps: Vec<ThrottleDevice>,
        "BlkioDeviceReadIOps" => blkio_device_read_iops: Vec<ThrottleDevice>,
        "BlkioDeviceWriteIOps" => blkio_device_write_iops: Vec<ThrottleDevice>,
        "CpuPeriod" => cpu_period: i64,
        "CpuQuota" => cpu_quota: i64,
        "CpuRealtimePeriod" => cpu_realtime_period: i64,
        "CpuRealtimeRuntime" => cpu_realtime_runtime: i64,
        "CpusetCpus" => cpuset_cpus: String,
        "CpusetMems" => cpuset_mems: String,
        "Devices" => devices: Vec<DeviceMapping>,
        "DeviceCgroupRules" => device_cgroup_rules: Vec<String>,
        "DeviceRequests" => device_requests: Vec<DeviceRequest>,
        "KernelMemory" => kernel_memory: i64,
        "KernelMemoryTCP" => kernel_memory_tcp: i64,
        "MemoryReservation" => memory_reservation: i64,
        "MemorySwap" => memory_swap: i64,
        "MemorySwappiness" => memory_swappiness: i64,
        "OomKillDisable" => oom_kill_disable: bool,
        "PidsLimit" => pids_limit: i64,
        "Ulimits" => ulimits: Vec<Ulimit>,
        "CpuCount" => cpu_count: i64,
        "CpuPercent" => cpu_percent: i64,
        "IOMaximumIOps" => io_maximum_iops: u64,
        "IOMaximumBandwidth" => io_maximum_bandwidth: u64,

        "Mounts" => mounts: Vec<Mount>,
        "MaskedPaths" => masked_paths: Vec<String>,
        "ReadonlyPaths" => readonly_paths: Vec<String>,
        "Init" => init: bool,
    }
}

body_struct! {
    /// Go's `container.LogConfig`.
    pub struct LogConfig {
        "Type" => type_: String,
        "Config" => config: StringMap,
    }
}

body_struct! {
    /// One host binding of a container port (`nat.PortBinding`).
    pub struct PortBinding {
        "HostIp" => host_ip: String,
        "HostPort" => host_port: String,
    }
}

body_struct! {
    /// Go's `container.RestartPolicy`.
    pub struct RestartPolicy {
        "Name" => name: String,
        "MaximumRetryCount" => maximum_retry_count: i64,
    }
}

body_struct! {
    /// Go's `blkiodev.WeightDevice`.
    pub struct WeightDevice {
        "Path" => path: String,
        "Weight" => weight: u16,
    }
}

body_struct! {
    /// Go's `blkiodev.ThrottleDevice`.
    pub struct ThrottleDevice {
        "Path" => path: String,
        "Rate" => rate: u64,
    }
}

body_struct! {
    /// Go's `container.DeviceMapping`.
    pub struct DeviceMapping {
        "PathOnHost" => path_on_host: String,
        "PathInContainer" => path_in_container: String,
        "CgroupPermissions" => cgroup_permissions: String,
    }
}

body_struct! {
    /// Go's `container.DeviceRequest` (`--gpus`).
    pub struct DeviceRequest {
        "Driver" => driver: String,
        "Count" => count: i64,
        "DeviceIDs" => device_ids: Vec<String>,
        "Capabilities" => capabilities: Vec<Vec<String>>,
        "Options" => options: StringMap,
    }
}

body_struct! {
    /// Go's `units.Ulimit`.
    pub struct Ulimit {
        "Name" => name: String,
        "Soft" => soft: i64,
        "Hard" => hard: i64,
    }
}

body_struct! {
    /// Go's `mount.Mount`.
    pub struct Mount {
        "Type" => type_: String,
        "Source" => source: String,
        "Target" => target: String,
        "ReadOnly" => read_only: bool,
        "Consistency" => consistency: String,
        "BindOptions" => bind_options: BindOptions,
        "VolumeOptions" => volume_options: VolumeOptions,
        "TmpfsOptions" => tmpfs_options: TmpfsOptions,
        "ClusterOptions" => cluster_options: EmptyObject,
    }
}

body_struct! {
    /// Go's `mount.BindOptions`.
    pub struct BindOptions {
        "Propagation" => propagation: String,
        "NonRecursive" => non_recursive: bool,
        "CreateMountpoint" => create_mountpoint: bool,
        "ReadOnlyNonRecursive" => read_only_non_recursive: bool,
        "ReadOnlyForceRecursive" => read_only_force_recursive: bool,
    }
}

body_struct! {
    /// Go's `mount.VolumeOptions`.
    pub struct VolumeOptions {
        "NoCopy" => no_copy: bool,
        "Labels" => labels: StringMap,
        "DriverConfig" => driver_config: Driver,
        "Subpath" => subpath: String,
    }
}

body_struct! {
    /// Go's `mount.Driver`.
    pub struct Driver {
        "Name" => name: String,
        "Options" => options: StringMap,
    }
}

body_struct! {
    /// Go's `mount.TmpfsOptions`. `Mode` is an `os.FileMode` (uint32).
    pub struct TmpfsOptions {
        "SizeBytes" => size_bytes: i64,
        "Mode" => mode: u32,
        "Options" => options: Vec<Vec<String>>,
    }
}

body_struct! {
    /// Go's `network.NetworkingConfig`.
    pub struct NetworkingConfig {
        "EndpointsConfig" => endpoints_config: BTreeMap<String, EndpointSettings>,
    }
}

body_struct! {
    /// Go's `network.EndpointSettings`. `GwPriority` is API 1.48, but docker
    /// CLI 28 sends it (as 0) at every API version.
    pub struct EndpointSettings {
        "IPAMConfig" => ipam_config: EndpointIpamConfig,
        "Links" => links: Vec<String>,
        "Aliases" => aliases: Vec<String>,
        "MacAddress" => mac_address: String,
        "DriverOpts" => driver_opts: StringMap,
        "GwPriority" => gw_priority: i64,
        "NetworkID" => network_id: String,
        "EndpointID" => endpoint_id: String,
        "Gateway" => gateway: String,
        "IPAddress" => ip_address: String,
        "IPPrefixLen" => ip_prefix_len: i64,
        "IPv6Gateway" => ipv6_gateway: String,
        "GlobalIPv6Address" => global_ipv6_address: String,
        "GlobalIPv6PrefixLen" => global_ipv6_prefix_len: i64,
        "DNSNames" => dns_names: Vec<String>,
    }
}

body_struct! {
    /// Go's `network.EndpointIPAMConfig`.
    pub struct EndpointIpamConfig {
        "IPv4Address" => ipv4_address: String,
        "IPv6Address" => ipv6_address: String,
        "LinkLocalIPs" => link_local_ips: Vec<String>,
    }
}

body_struct! {
    /// `POST /containers/{id}/exec`: Go's `ExecConfig` / `ExecOptions`.
    /// The CLI always sends `Detach`, although the daemon takes it from
    /// the exec start request.
    pub struct ExecCreate {
        "User" => user: String,
        "Privileged" => privileged: bool,
        "Tty" => tty: bool,
        "ConsoleSize" => console_size: [u64; 2],
        "AttachStdin" => attach_stdin: bool,
        "AttachStderr" => attach_stderr: bool,
        "AttachStdout" => attach_stdout: bool,
        "Detach" => detach: bool,
        "DetachKeys" => detach_keys: String,
        "Env" => env: Vec<String>,
        "WorkingDir" => working_dir: String,
        "Cmd" => cmd: Vec<String>,
    }
}

body_struct! {
    /// `POST /exec/{id}/start`: Go's `ExecStartCheck`.
    pub struct ExecStart {
        "Detach" => detach: bool,
        "Tty" => tty: bool,
        "ConsoleSize" => console_size: [u64; 2],
    }
}

body_struct! {
    /// `POST /networks/create`.
    pub struct NetworkCreate {
        "Name" => name: String,
        "CheckDuplicate" => check_duplicate: bool,
        "Driver" => driver: String,
        "Scope" => scope: String,
        "EnableIPv6" => enable_ipv6: bool,
        "EnableIPv4" => enable_ipv4: bool,
        "IPAM" => ipam: Ipam,
        "Internal" => internal: bool,
        "Attachable" => attachable: bool,
        "Ingress" => ingress: bool,
        "ConfigOnly" => config_only: bool,
        "ConfigFrom" => config_from: ConfigReference,
        "Options" => options: StringMap,
        "Labels" => labels: StringMap,
    }
}

body_struct! {
    /// Go's `network.IPAM`.
    pub struct Ipam {
        "Driver" => driver: String,
        "Config" => config: Vec<IpamPool>,
        "Options" => options: StringMap,
    }
}

body_struct! {
    /// Go's `network.IPAMConfig`: one address pool.
    pub struct IpamPool {
        "Subnet" => subnet: String,
        "IPRange" => ip_range: String,
        "Gateway" => gateway: String,
        "AuxiliaryAddresses" => auxiliary_addresses: StringMap,
    }
}

body_struct! {
    /// Go's `network.ConfigReference`.
    pub struct ConfigReference {
        "Network" => network: String,
    }
}

body_struct! {
    /// `POST /networks/{id}/connect`.
    pub struct NetworkConnect {
        "Container" => container: String,
        "EndpointConfig" => endpoint_config: EndpointSettings,
    }
}

body_struct! {
    /// `POST /networks/{id}/disconnect`.
    pub struct NetworkDisconnect {
        "Container" => container: String,
        "Force" => force: bool,
    }
}

body_struct! {
    /// `POST /volumes/create`: Go's `volume.CreateOptions`.
    pub struct VolumeCreate {
        "Name" => name: String,
        "Driver" => driver: String,
        "DriverOpts" => driver_opts: StringMap,
        "Labels" => labels: StringMap,
        "ClusterVolumeSpec" => cluster_volume_spec: ClusterVolumeSpec,
    }
}

body_struct! {
    /// Go's `volume.ClusterVolumeSpec` (Swarm CSI volumes).
    pub struct ClusterVolumeSpec {
        "Group" => group: String,
        "AccessMode" => access_mode: AccessMode,
        "AccessibilityRequirements" => accessibility_requirements: TopologyRequirement,
        "CapacityRange" => capacity_range: CapacityRange,
        "Secrets" => secrets: Vec<VolumeSecret>,
        "Availability" => availability: String,
    }
}

body_struct! {
    /// Go's `volume.AccessMode`.
    pub struct AccessMode {
        "Scope" => scope: String,
        "Sharing" => sharing: String,
        "MountVolume" => mount_volume: TypeMount,
        "BlockVolume" => block_volume: EmptyObject,
    }
}

body_struct! {
    /// Go's `volume.TypeMount`.
    pub struct TypeMount {
        "FsType" => fs_type: String,
        "MountFlags" => mount_flags: Vec<String>,
    }
}

body_struct! {
    /// Go's `volume.TopologyRequirement`.
    pub struct TopologyRequirement {
        "Requisite" => requisite: Vec<Topology>,
        "Preferred" => preferred: Vec<Topology>,
    }
}

body_struct! {
    /// Go's `volume.Topology`.
    pub struct Topology {
        "Segments" => segments: StringMap,
    }
}

body_struct! {
    /// Go's `volume.CapacityRange`.
    pub struct CapacityRange {
        "RequiredBytes" => required_bytes: i64,
        "LimitBytes" => limit_bytes: i64,
    }
}

body_struct! {
    /// Go's `volume.Secret`.
    pub struct VolumeSecret {
        "Key" => key: String,
        "Secret" => secret: String,
    }
}

body_struct! {
    /// `POST /containers/{id}/update`: Go's `container.UpdateConfig`, the
    /// `Resources` fields of [`HostConfig`] plus `RestartPolicy`.
    pub struct ContainerUpdate {
        "CpuShares" => cpu_shares: i64,
        "Memory" => memory: i64,
        "NanoCpus" => nano_cpus: i64,
        "CgroupParent" => cgroup_parent: String,
        "BlkioWeight" => blkio_weight: u16,
        "BlkioWeightDevice" => blkio_weight_device: Vec<WeightDevice>,
        "BlkioDeviceReadBps" => blkio_device_read_bps: Vec<ThrottleDevice>,
        "BlkioDeviceWriteBps" => blkio_device_write_bps: Vec<ThrottleDevice>,
        "BlkioDeviceReadIOps" => blkio_device_read_iops: Vec<ThrottleDevice>,
        "BlkioDeviceWriteIOps" => blkio_device_write_iops: Vec<ThrottleDevice>,
        "CpuPeriod" => cpu_period: i64,
        "CpuQuota" => cpu_quota: i64,
        "CpuRealtimePeriod" => cpu_realtime_period: i64,
        "CpuRealtimeRuntime" => cpu_realtime_runtime: i64,
        "CpusetCpus" => cpuset_cpus: String,
        "CpusetMems" => cpuset_mems: String,
        "Devices" => devices: Vec<DeviceMapping>,
        "DeviceCgroupRules" => device_cgroup_rules: Vec<String>,
        "DeviceRequests" => device_requests: Vec<DeviceRequest>,
        "KernelMemory" => kernel_memory: i64,
        "KernelMemoryTCP" => kernel_memory_tcp: i64,
        "MemoryReservation" => memory_reservation: i64,
        "MemorySwap" => memory_swap: i64,
        "MemorySwappiness" => memory_swappiness: i64,
        "OomKillDisable" => oom_kill_disable: bool,
        "PidsLimit" => pids_limit: i64,
        "Ulimits" => ulimits: Vec<Ulimit>,
        "CpuCount" => cpu_count: i64,
        "CpuPercent" => cpu_percent: i64,
        "IOMaximumIOps" => io_maximum_iops: u64,
        "IOMaximumBandwidth" => io_maximum_bandwidth: u64,

        "RestartPolicy" => restart_policy: RestartPolicy,
    }
}

/// Go's `strslice.StrSlice` (`Cmd`, `Entrypoint`, `Shell`, `CapAdd`,
/// `CapDrop`): a JSON string or an array of strings, always re-encoded as
/// an array, so the daemon reads the same list the proxy checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrOrVec(pub Vec<String>);

impl Serialize for StrOrVec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

// A visitor rather than `#[serde(untagged)]`: untagged buffers the value and
// reports only "did not match any variant", losing which element was wrong.
impl<'de> Deserialize<'de> for StrOrVec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrOrVecVisitor;

        impl<'de> Visitor<'de> for StrOrVecVisitor {
            type Value = StrOrVec;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<StrOrVec, E> {
                Ok(StrOrVec(vec![s.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrOrVec, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StrOrVec(items))
            }
        }

        deserializer.deserialize_any(StrOrVecVisitor)
    }
}

fn str_or_vec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<StrOrVec>::deserialize(deserializer)?.map(|s| s.0))
}

/// The JSON field names of a struct deriving `Deserialize`, as serde's
/// derive passes them to `deserialize_struct`.
pub fn field_names<T: de::DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probe only"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}
