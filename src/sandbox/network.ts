import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { VmcError } from '../errors.js';
import { HOTPLUG_ROOT_PORTS } from '../hypervisor/qemu/cmdline.js';
import { addNic, releaseSpareNic } from '../hypervisor/qemu/qmp-commands.js';
import { spareTapName, tapName } from '../hypervisor/qemu/tap-names.js';
import type { CommandRunner } from '../platform/command.js';
import type { PhaseRecorder } from '../platform/phases.js';
import type { UndoStack } from '../platform/undo-stack.js';
import { requestFigures } from '../protocol/agent/figures.js';
import type { NicConfig } from '../protocol/agent/messages.js';
import type { Vm } from '../vm/vm.js';

/** One of the pod's interfaces, as the network namespace holds it (made by CNI in real life). */
export interface PodInterface {
  name: string;
  nic: NicConfig;
}

interface IpAddr {
  ifname: string;
  address?: string;
  mtu?: number;
  link_type?: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope?: string }>;
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
  protocol?: string;
}

/** Runs `ip`/`tc` inside the network namespace at `netns`. */
function inNs(run: CommandRunner, netns: string, cmd: string, args: string[]) {
  return run('nsenter', [`--net=${netns}`, cmd, ...args], { errorCode: 'VMC_ERR_NETWORK_SETUP' });
}

/** The pod's interfaces (all but loopback) with their MAC, MTU, IPv4/IPv6 global addresses and routes. */
export async function podInterfaces(run: CommandRunner, netns: string): Promise<PodInterface[]> {
  // Both at once: each is a process start (nsenter, then ip) that mostly waits.
  const [a, r] = await Promise.all([
    inNs(run, netns, 'ip', ['-j', 'addr', 'show']),
    inNs(run, netns, 'ip', ['-j', 'route', 'show']),
  ]);
  const addrs = JSON.parse(a.stdout.toString()) as IpAddr[];
  const routes = JSON.parse(r.stdout.toString()) as IpRoute[];
  return addrs
    .filter((a) => a.link_type === 'ether' && a.address)
    .map((a) => ({
      name: a.ifname,
      nic: {
        mac: a.address!.toLowerCase(),
        mtu: a.mtu ?? 1500,
        addresses: (a.addr_info ?? [])
          .filter((i) => i.scope === undefined || i.scope === 'global')
          .map((i) => `${i.local}/${i.prefixlen}`),
        // Kernel routes for the addresses' own subnets come with the addresses in the guest too.
        routes: routes
          .filter((r) => r.dev === a.ifname && r.protocol !== 'kernel')
          .map((r) => (r.gateway ? { dest: r.dst, via: r.gateway } : { dest: r.dst })),
      },
    }));
}

/**
 * Whether VM `vm`'s spare NIC (protocol/spare-nic.ts) is still unused: its tap is in the host's namespace
 * until a pod network takes it (moved into the pod's namespace) or it is released (QEMU closes it). A VM
 * started by an older vmcache has none, and gets its first NIC hot-plugged like the others.
 */
export function hasSpareNic(vm: Vm, sysNet = '/sys/class/net'): boolean {
  return existsSync(`${sysNet}/${spareTapName(vm.id)}`);
}

/** Deletes the spare NIC's backend of a VM that gets no pod network (nothing if it has none left). */
export async function releaseUnusedSpareNic(vm: Vm, sysNet = '/sys/class/net'): Promise<void> {
  if (hasSpareNic(vm, sysNet)) await releaseSpareNic(vm.qmp);
}

/** The name `ip link set ... netns NAME` takes for a namespace path, when it is a named one. */
function nsName(netns: string): string | null {
  return ['/var/run/netns', '/run/netns'].includes(dirname(netns)) ? basename(netns) : null;
}

/** What `connectPodNetwork` made, and only that: what `disconnectPodNetwork` removes. */
export interface PodNetwork {
  netns: string;
  /** Tap devices (in the pod's namespace once moved; deleting one also removes its filters). */
  taps: string[];
  /** Pod interfaces that got an ingress qdisc from us. */
  ingress: string[];
}

/**
 * The name of a pod's network namespace path, or an error before anything is made: only named namespaces
 * (`/var/run/netns/NAME`, as CNI and containerd's CRI make them) can be brought into a VM (`ip link set
 * ... netns NAME`).
 */
export function checkPodNetns(netns: string): string {
  const name = nsName(netns);
  if (!name)
    throw new VmcError(
      'VMC_ERR_NETWORK_SETUP',
      `network namespace ${netns}: only named namespaces (/var/run/netns/NAME) are supported`,
    );
  return name;
}

/**
 * Connects the pod's network namespace to a running (possibly cached, network-less) VM the way Kata's default
 * "tcfilter" model does, for each interface of the namespace:
 * 1. the first interface takes the VM's spare NIC (protocol/spare-nic.ts: its tap is open in QEMU since
 *    start-up, the guest has the NIC since boot); for each other one a tap device is made in the host
 *    namespace and QEMU opens it by name (QMP `netdev_add`: Node cannot pass file descriptors over QMP), then
 *    a virtio-net NIC with the interface's MAC is hot-plugged on a free PCIe root port;
 * 2. the tap moves into the pod's namespace (QEMU's descriptor stays valid), and tc `mirred` filters redirect
 *    everything the interface receives to the tap and back;
 * 3. the guest agent gives the NIC the interface's MTU, addresses and routes (and the spare NIC the
 *    interface's MAC); asked at once, it does so while the host does step 2.
 * Each step pushes its own undo on `undo` as it is made, so a failure part-way removes exactly what was made
 * (a namespace that is refused up front is never touched). Returns what was made. `trace`, when given, gets
 * one lap per step (`pod network: ...`) and the agent's figures (the guest's wait for the NIC, its set-up).
 * `sysNet` is where the host's network devices are listed (a test's own directory in unit tests).
 */
export async function connectPodNetwork(
  vm: Vm,
  netns: string,
  run: CommandRunner,
  undo: UndoStack,
  trace?: PhaseRecorder,
  sysNet = '/sys/class/net',
): Promise<PodNetwork> {
  const name = checkPodNetns(netns);
  const lap = (step: string) => trace?.lap(`pod network: ${step}`);
  const ifaces = await podInterfaces(run, netns);
  lap("read the namespace's interfaces and routes (ip -j addr, ip -j route)");
  // One NIC per spare root port.
  if (ifaces.length > HOTPLUG_ROOT_PORTS)
    throw new VmcError(
      'VMC_ERR_NETWORK_SETUP',
      `network namespace ${netns} has ${ifaces.length} interfaces; a VM takes at most ${HOTPLUG_ROOT_PORTS}`,
    );
  const made: PodNetwork = { netns, taps: [], ingress: [] };
  const ns = (cmd: string, ...args: string[]) => inNs(run, netns, cmd, args);
  const spare = hasSpareNic(vm, sysNet);
  for (const [i, iface] of ifaces.entries()) {
    // The first interface takes the spare NIC when there is one: its tap exists, QEMU has it open, and the
    // guest has had the NIC since boot. The others are hot-plugged, each with a tap of its own.
    const useSpare = spare && i === 0;
    const tap = useSpare ? spareTapName(vm.id) : tapName(vm.id, i);
    if (!useSpare) {
      await run('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap'], { errorCode: 'VMC_ERR_NETWORK_SETUP' });
      lap('make the tap (ip tuntap add)');
    }
    made.taps.push(tap);
    // In the host namespace until moved, in the pod's after: try both.
    undo.push(`delete tap ${tap}`, () =>
      run('ip', ['link', 'del', 'dev', tap]).catch(() => ns('ip', 'link', 'del', 'dev', tap)),
    );
    if (!useSpare) await addNic(vm.qmp, i, { tap, mac: iface.nic.mac }, lap);
    // The guest finds the NIC (a hot-plugged one once it appears) and configures it while the host moves the
    // tap and sets up tc: neither needs the other. A frame the guest sends before the filters are in place is
    // dropped, as on a cable plugged in a moment early; the pod's processes start only after both are done.
    const guest = vm.agent.requestTraced(
      useSpare ? { op: 'net', nic: iface.nic, spare: true } : { op: 'net', nic: iface.nic },
      30_000,
    );
    guest.catch(() => {}); // awaited below on every path; this only keeps an early rejection from going unhandled
    try {
      await run('ip', ['link', 'set', 'dev', tap, 'netns', name], { errorCode: 'VMC_ERR_NETWORK_SETUP' });
      lap('move the tap into the namespace (ip link set netns)');
      // Settled both before going on, so that a failure of one never leaves the other's undo unpushed.
      const both = await Promise.allSettled([
        ns('ip', 'link', 'set', 'dev', tap, 'mtu', String(iface.nic.mtu), 'up'),
        ns('tc', 'qdisc', 'add', 'dev', iface.name, 'ingress').then(() => {
          made.ingress.push(iface.name);
          undo.push(`delete the ingress qdisc of ${iface.name}`, () =>
            ns('tc', 'qdisc', 'del', 'dev', iface.name, 'ingress'),
          );
        }),
      ]);
      for (const b of both) if (b.status === 'rejected') throw b.reason;
      lap("tap MTU and up (ip link set), the interface's ingress qdisc (tc qdisc add), at once");
      // The rest is on the tap, which takes it along when deleted: one tc process for all of it.
      await run('nsenter', [`--net=${netns}`, 'tc', '-batch', '-'], {
        errorCode: 'VMC_ERR_NETWORK_SETUP',
        input: Buffer.from(mirredBatch(iface.name, tap)),
      });
      lap("the tap's ingress qdisc and the mirred filters both ways (one tc -batch)");
    } catch (err) {
      await guest.catch(() => {});
      throw err;
    }
    const { trace: t } = await guest;
    lap("the rest of the guest agent's net op (wait for the NIC, configure it)");
    if (trace)
      requestFigures(
        trace,
        "pod network: the rest of the guest agent's net op (wait for the NIC, configure it)",
        t,
      );
  }
  return made;
}

/**
 * The `tc -batch` input that adds the tap's ingress qdisc and redirects, with tc `mirred`, everything the pod
 * interface `iface` receives to `tap` and back (the interface's own ingress qdisc must exist). Interface names
 * hold no blanks or newlines (the kernel refuses them), so each is one word of its line.
 */
export function mirredBatch(iface: string, tap: string): string {
  const filter = (from: string, to: string) =>
    `filter add dev ${from} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev ${to}`;
  return [`qdisc add dev ${tap} ingress`, filter(iface, tap), filter(tap, iface), ''].join('\n');
}

/** Removes what `connectPodNetwork` made, and nothing else: its taps (with their filters) and its ingress qdiscs. */
export async function disconnectPodNetwork(made: PodNetwork, run: CommandRunner): Promise<void> {
  for (const tap of made.taps)
    await inNs(run, made.netns, 'ip', ['link', 'del', 'dev', tap]).catch(() => undefined);
  for (const iface of made.ingress)
    await inNs(run, made.netns, 'tc', ['qdisc', 'del', 'dev', iface, 'ingress']).catch(() => undefined);
}
