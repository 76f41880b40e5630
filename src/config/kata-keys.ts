/**
 * Kata keys vmcache reads and does not act on, with the reason, so a Kata user's `configuration.toml` loads
 * unchanged and the one warning about them says why each is ignored. The lists follow Kata's
 * `configuration-qemu.toml.in` (runtime-go) and runtime-rs's; a key missing here is reported as unknown, and an
 * unknown key close to a listed or known one is refused as a likely typo (see `config.ts`).
 */

/** Why a Kata key has no effect in vmcache. */
export type IgnoredReason = 'boundary' | 'guest';

/** How each reason reads in the warning. */
export const REASON_TEXT: Readonly<Record<IgnoredReason, string>> = {
  boundary: 'covered by the VM boundary',
  guest: "not applicable to vmcache's guest",
};

const boundary = (...keys: string[]) => keys.map((k) => [k, 'boundary'] as const);
const guest = (...keys: string[]) => keys.map((k) => [k, 'guest'] as const);

/** Per section: key → reason. Host-side hardening the VM makes redundant is `boundary`; the rest is `guest`. */
export const KATA_IGNORED: ReadonlyMap<string, ReadonlyMap<string, IgnoredReason>> = new Map([
  [
    'hypervisor.qemu',
    new Map<string, IgnoredReason>([
      ...boundary('rootless', 'seccompsandbox', 'disable_selinux', 'disable_guest_selinux'),
      ...guest(
        'rootfs_type',
        'confidential_guest',
        'sev_snp_guest',
        'enable_annotations',
        'valid_hypervisor_paths',
        'firmware',
        'firmware_volume',
        'machine_accelerators',
        'cpu_features',
        'default_bridges',
        'memory_offset',
        'enable_virtio_mem',
        'disable_block_device_use',
        'shared_fs',
        'virtio_fs_daemon',
        'valid_virtio_fs_daemon_paths',
        'virtio_fs_cache_size',
        'virtio_fs_queue_size',
        'virtio_fs_extra_args',
        'virtio_fs_cache',
        'virtio_fs_inode_file_handles',
        'block_device_driver',
        'block_device_aio',
        'block_device_cache_set',
        'block_device_cache_direct',
        'block_device_cache_noflush',
        'block_device_logical_sector_size',
        'block_device_physical_sector_size',
        'enable_numa',
        'numa_mapping',
        'enable_iothreads',
        'indep_iothreads',
        'enable_mem_prealloc',
        'reclaim_guest_freed_memory',
        'enable_hugepages',
        'enable_vhost_user_store',
        'vhost_user_store_path',
        'valid_vhost_user_store_paths',
        'vhost_user_reconnect_timeout_sec',
        'enable_iommu',
        'enable_iommu_platform',
        'file_mem_backend',
        'valid_file_mem_backends',
        'pflashes',
        'enable_debug',
        'extra_monitor_socket',
        'disable_nesting_checks',
        'msize_9p',
        'disable_image_nvdimm',
        'hot_plug_vfio',
        'cold_plug_vfio',
        'hotplug_vfio_on_root_bus',
        'pcie_root_port',
        'pcie_switch_port',
        'disable_vhost_net',
        'entropy_source',
        'valid_entropy_sources',
        'guest_hook_path',
        'rx_rate_limiter_max_rate',
        'tx_rate_limiter_max_rate',
        'guest_memory_dump_path',
        'guest_memory_dump_paging',
        'enable_guest_swap',
        'use_legacy_serial',
        'sgx_epc_size',
        'static_sandbox_resource_mgmt',
        'default_gpus',
        'default_gpu_model',
        'kernel_verity_params',
        'qgs_port',
      ),
    ]),
  ],
  [
    'agent',
    new Map<string, IgnoredReason>(
      guest(
        'enable_debug',
        'enable_tracing',
        'kernel_modules',
        'debug_console_enabled',
        'cdh_api_timeout',
        'mem_agent_enable',
      ),
    ),
  ],
  [
    'runtime',
    new Map<string, IgnoredReason>([
      ...boundary('disable_guest_seccomp', 'sandbox_cgroup_only', 'guest_selinux_label'),
      ...guest(
        'enable_debug',
        'internetworking_model',
        'enable_vcpus_pinning',
        'enable_tracing',
        'jaeger_endpoint',
        'jaeger_user',
        'jaeger_password',
        'disable_new_netns',
        'static_sandbox_resource_mgmt',
        'sandbox_bind_mounts',
        'vfio_mode',
        'disable_guest_empty_dir',
        'emptydir_mode',
        'kubelet_root_dir',
        'pod_resource_api_sock',
        'experimental',
        'enable_pprof',
        'create_container_timeout',
        'dan_conf',
        'name',
        'hypervisor_name',
        'agent_name',
        'log_level',
      ),
    ]),
  ],
]);

/** The reason `key` of `section` is ignored, or undefined when it is not a Kata key vmcache ignores. */
export function ignoredReason(section: string, key: string): IgnoredReason | undefined {
  return KATA_IGNORED.get(section)?.get(key);
}
