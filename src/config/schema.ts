import { DEFAULT_SHAPE, DEFAULT_TCG_TB_SIZE_MIB } from './defaults.js';

/**
 * The configuration vmcache reads from `configuration.toml`: Kata's section and key names (so a Kata user's
 * file works), plus vmcache's own keys. Each key has a type, a default, and a validator; unknown keys are
 * reported (with their line) rather than silently ignored. Never index these objects with a name from a file
 * (`config.ts` turns them into Maps): a key such as `constructor` or `__proto__` must not find a prototype's member.
 */

/**
 * What a cache server does for a request that finds no VM ready: `wait` up to `[cache] acquire_timeout` (Kata's
 * behaviour), `fail` at once (VMC_ERR_CACHE_MISS), or `cold`: boot one for this request outside the pool.
 */
export const MISS_POLICIES = ['wait', 'fail', 'cold'] as const;
export type MissPolicy = (typeof MISS_POLICIES)[number];

/** A key's type and constraints. */
export type KeySpec =
  | { type: 'bool'; default: boolean; doc: string }
  | {
      type: 'int';
      default: number;
      min: number;
      max: number;
      doc: string;
      /** Kata's value rule: 0 (and for `cpus`, any negative value) means the host's maximum. */
      host?: 'cpus' | 'maxcpus' | 'memory';
    }
  | {
      type: 'string';
      default: string;
      doc: string;
      pattern?: RegExp;
      /** What `pattern` accepts, in words (without it, the pattern is read as a list of alternatives). */
      patternText?: string;
      absolute?: boolean;
      /** `unix`: a Unix socket path (absolute, at most 107 bytes); `metrics`: "", a socket path or 127.0.0.1:PORT. */
      endpoint?: 'unix' | 'metrics';
    }
  | { type: 'strings'; default: string[]; doc: string };

/** Sections and keys vmcache acts on (`kata-keys.ts` lists the Kata keys it reads and ignores). */
export const SCHEMA = {
  factory: {
    keys: {
      enable_template: { type: 'bool', default: false, doc: 'boot VMs as clones of a template VM' },
      template_path: {
        type: 'string',
        default: '/run/vmcache/template',
        absolute: true,
        doc: 'tmpfs directory of the template',
      },
      vm_cache_number: {
        type: 'int',
        default: 0,
        min: 0,
        max: 64,
        doc: 'VMs the cache server keeps ready (0: no cache)',
      },
      vm_cache_endpoint: {
        type: 'string',
        default: '/run/vmcache/cache.sock',
        absolute: true,
        endpoint: 'unix',
        doc: 'Unix socket of the cache server',
      },
    },
  },
  'hypervisor.qemu': {
    keys: {
      path: { type: 'string', default: 'qemu-system-x86_64', doc: 'QEMU binary' },
      kernel: { type: 'string', default: '', doc: 'guest kernel (default: the built image)' },
      initrd: { type: 'string', default: '', doc: 'guest initramfs (default: the built image)' },
      image: { type: 'string', default: '', doc: 'guest root disk (default: the built image)' },
      machine_type: {
        type: 'string',
        default: 'q35',
        doc: 'machine type (q35 only: hot-plug, vmgenid, templating)',
      },
      kernel_params: { type: 'string', default: '', doc: 'extra kernel parameters, space separated' },
      default_vcpus: {
        type: 'int',
        default: DEFAULT_SHAPE.cpus,
        min: 1,
        max: 64,
        host: 'cpus',
        doc: 'vCPUs at boot (0: 1; negative: all host cores)',
      },
      default_maxvcpus: {
        type: 'int',
        default: DEFAULT_SHAPE.maxCpus,
        min: 1,
        max: 64,
        host: 'maxcpus',
        doc: 'vCPU hot-plug limit (0: the host cores)',
      },
      default_memory: {
        type: 'int',
        default: DEFAULT_SHAPE.memoryMiB,
        min: 128,
        max: 65536,
        doc: 'memory at boot, MiB',
      },
      memory_slots: {
        type: 'int',
        default: DEFAULT_SHAPE.memorySlots,
        min: 1,
        max: 64,
        doc: 'memory hot-plug slots',
      },
      default_maxmemory: {
        type: 'int',
        default: DEFAULT_SHAPE.maxMemoryMiB,
        min: 128,
        max: 1048576,
        host: 'memory',
        doc: "memory hot-plug limit, MiB (0: the host's memory)",
      },
      accel: { type: 'string', default: 'auto', pattern: /^(auto|kvm|tcg)$/, doc: 'auto, kvm or tcg' },
      cpu_model: { type: 'string', default: '', doc: 'CPU model (default: max under TCG, host under KVM)' },
      tcg_tb_size: {
        type: 'int',
        default: DEFAULT_TCG_TB_SIZE_MIB,
        min: 8,
        max: 1024,
        doc: 'TCG translation cache, MiB',
      },
    },
  },
  agent: {
    keys: {
      dial_timeout: {
        type: 'int',
        default: 60,
        min: 1,
        max: 3600,
        doc: 'seconds to wait for the agent of a booting VM',
      },
    },
  },
  runtime: {
    keys: {
      state_dir: { type: 'string', default: '', doc: 'VM state directory (default /run/vmcache)' },
    },
  },
  cache: {
    keys: {
      max_parallel_boots: {
        type: 'int',
        default: 0,
        min: 0,
        max: 64,
        doc: 'concurrent boots while filling (0: one per 2 cores, at least 1)',
      },
      max_age: {
        type: 'int',
        default: 3600,
        min: 0,
        max: 604800,
        doc: 'seconds an idle VM may wait before it is replaced (0: forever)',
      },
      health_interval: {
        type: 'int',
        default: 5,
        min: 1,
        max: 3600,
        doc: 'seconds between health checks of idle VMs',
      },
      acquire_timeout: {
        type: 'int',
        default: 30,
        min: 0,
        max: 3600,
        doc: 'seconds GetBaseVM waits on an empty cache',
      },
      memory_budget: {
        type: 'int',
        default: 0,
        min: 0,
        max: 16777216,
        doc: 'MiB all pools together may keep ready or booting (0: no budget); demand shares it',
      },
      miss_policy: {
        type: 'string',
        default: 'wait',
        pattern: new RegExp(`^(${MISS_POLICIES.join('|')})$`),
        doc: 'what a request that finds no VM ready gets unless it asks otherwise: wait, fail or cold',
      },
      lease_timeout: {
        type: 'int',
        default: 15,
        min: 1,
        max: 3600,
        doc: 'seconds a client has to acknowledge a VM',
      },
      retry_initial: {
        type: 'int',
        default: 1,
        min: 0,
        max: 3600,
        doc: 'seconds before the first retry of a failed boot',
      },
      retry_max: {
        type: 'int',
        default: 60,
        min: 1,
        max: 3600,
        doc: 'longest wait between boot retries, seconds',
      },
      metrics_endpoint: {
        type: 'string',
        default: '',
        endpoint: 'metrics',
        doc: 'Prometheus metrics: a Unix socket path or 127.0.0.1:PORT ("" = off)',
      },
    },
  },
} satisfies Record<string, { keys: Record<string, KeySpec> }>;

/**
 * The keys of one `[[cache.pool]]` table: a pool of VMs of one shape (vmcache's own; Kata has one pool of the
 * `[hypervisor.qemu]` shape). Its size follows demand between `min` and `max` (pool-sizing.ts).
 */
export const POOL_KEYS = {
  name: {
    type: 'string',
    default: '',
    pattern: /^[a-z0-9][a-z0-9-]{0,31}$/,
    patternText: 'up to 32 lower-case letters, digits and -, starting with a letter or digit',
    doc: 'name in status and metrics (default: <vcpus>x<memory>), lower-case letters, digits and -',
  },
  vcpus: { type: 'int', default: 0, min: 1, max: 64, doc: 'vCPUs of the pool’s VMs (required)' },
  memory: { type: 'int', default: 0, min: 128, max: 65536, doc: 'memory of the pool’s VMs, MiB (required)' },
  min: { type: 'int', default: 0, min: 0, max: 64, doc: 'VMs always kept ready' },
  max: {
    type: 'int',
    default: 0,
    min: 0,
    max: 64,
    doc: 'most VMs kept ready when demand is high (default: min)',
  },
  template: {
    type: 'bool',
    default: false,
    doc: 'fill it with template clones (default: [factory] enable_template)',
  },
} satisfies Record<string, KeySpec>;

/** The keys a `[[cache.pool]]` table must set. */
export const POOL_REQUIRED = ['vcpus', 'memory'] as const;
