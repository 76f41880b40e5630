import { HOOK_KINDS } from '../../oci/hooks.js';
import { NAMESPACE_KINDS, PROPAGATION_FLAGS } from '../../oci/linux.js';

/**
 * What vmcache leaves to the VM boundary: accepted in config.json and not applied inside the guest, with the
 * reason. The one list of it (the README's "Ignored by design" and `vmcache features` print it).
 */
export const IGNORED_BY_DESIGN: Record<string, string> = {
  'process.capabilities':
    'every container process runs with the capabilities of root in the guest; the VM, not the capability set, separates it from the host',
  'linux.seccomp': 'system calls reach the guest kernel, not the host one; the VM is the boundary',
  'process.apparmorProfile': 'the guest has no AppArmor; the VM is the boundary',
  'process.selinuxLabel, linux.mountLabel': 'the guest has no SELinux; the VM is the boundary',
  'linux.resources.devices': 'device cgroup rules: the guest has only its own virtual devices',
  'linux.devices': 'host device nodes do not exist in the guest; the container gets the standard /dev nodes',
};

/** Namespace types vmcache makes (or shares within a pod); `user` and `time` are refused. */
const NAMESPACES = Object.keys(NAMESPACE_KINDS).filter((t) => t !== 'user' && t !== 'time');

/** `vmcache features` (runc's verb): what this runtime implements, as JSON, with the deliberate gaps. */
export function features(print: (s: string) => void): number {
  const out = {
    ociVersionMin: '1.0.0',
    ociVersionMax: '1.1.0',
    hooks: [...HOOK_KINDS],
    mountOptions: [
      'ro',
      'rw',
      'nosuid',
      'suid',
      'nodev',
      'dev',
      'noexec',
      'exec',
      'sync',
      'async',
      'dirsync',
      'noatime',
      'atime',
      'nodiratime',
      'diratime',
      'relatime',
      'norelatime',
      'strictatime',
      'bind',
      'rbind',
      ...Object.keys(PROPAGATION_FLAGS),
    ],
    linux: {
      namespaces: NAMESPACES,
      cgroup: { v1: false, v2: true, systemd: false, systemdUser: false },
      seccomp: { enabled: false },
      apparmor: { enabled: false },
      selinux: { enabled: false },
    },
    annotations: Object.fromEntries(
      Object.entries(IGNORED_BY_DESIGN).map(([k, why]) => [`org.vmcache.ignored.${k}`, why]),
    ),
  };
  print(`${JSON.stringify(out, null, 2)}\n`);
  return 0;
}
