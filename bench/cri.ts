import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { PhaseRecorder, type PhaseReport } from '../src/platform/phases.js';
import type { VmDeps } from '../src/vm/vm.js';
import { BUSYBOX_IMAGE, type CriClient, startCriNode } from '../test/helpers/cri.js';
import type { Row } from './cache.js';
import { phaseTable } from './phases.js';
import { startBenchCache } from './server.js';
import { summarize } from './stats.js';

/** Where the shim v2 daemons of the bench's node write their phases (VMCACHE_PHASES). */
const phasesFile = (logs: string) => `${logs}/../phases.jsonl`;

/** One pod start: its time, where it went (the three CRI calls), and the Node processes it started. */
interface PodStart {
  ms: number;
  phases: PhaseReport;
  nodeStarts: number;
}

/**
 * Counts the Node processes the node's runtimes start: NODE_OPTIONS makes every Node process (the vmcache CLI,
 * its host-side processes, the shim v2 and its daemon) append its pid to `log` before anything else runs
 * (~1 ms each, counted in the figures). The env is containerd's, which its shims and runtimes inherit.
 */
function nodeCounter(dir: string): { env: NodeJS.ProcessEnv; take(): number } {
  const log = `${dir}/node-starts.log`;
  const preload = `${dir}/count-node.cjs`;
  writeFileSync(preload, `require('fs').appendFileSync(${JSON.stringify(log)}, process.pid + '\\n');\n`);
  return {
    env: { NODE_OPTIONS: `--require ${preload}` },
    take: () => takeLines(log).length,
  };
}

/** The lines appended to `file` since the last take (the file is emptied). */
function takeLines(file: string): string[] {
  const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  rmSync(file, { force: true });
  return lines;
}

/**
 * The shim v2 daemon's own breakdown (VMCACHE_PHASES: its start-up, then each task's Create and Start
 * phases, the sandbox's first) as figures of the CRI call they happened in (the sandbox task's Start is part
 * of RunPodSandbox, which starts the pause container).
 */
function daemonFigures(file: string, rec: PhaseRecorder): void {
  const reports = takeLines(file).map((l) => JSON.parse(l) as PhaseReport & { verb: string });
  const creates = reports.filter((r) => r.verb === 'shim-v2 create+start');
  const into = [
    'RunPodSandbox (runtime start, sandbox VM, CNI network into it)',
    'StartContainer (the process in the guest)',
  ];
  for (const r of reports.filter((x) => x.verb === 'shim-v2 daemon'))
    rec.figure(into[0]!, 'daemon: start-up (Node, bundle, config)', r.totalMs, 'host');
  creates.forEach((r, i) => {
    const phase = into[Math.min(i, 1)]!;
    for (const p of r.phases)
      rec.figure(phase, `daemon ${i ? 'member' : 'sandbox'} task: ${p.name}`, p.ms, 'host');
  });
}

/**
 * What a kubelet waits for when it starts a pod: RunPodSandbox (sandbox VM, CNI network brought into it),
 * then CreateContainer and StartContainer of one busybox container, until StartContainer returns (the
 * container is running); each call is a phase. The pod is stopped and removed afterwards, untimed.
 */
async function podStart(
  cri: CriClient,
  handler: string,
  name: string,
  logs: string,
  nodes: { take(): number },
): Promise<PodStart> {
  const config = {
    metadata: { name, uid: `uid-${name}`, namespace: 'bench' },
    hostname: name,
    logDirectory: `${logs}/${name}`,
  };
  nodes.take();
  takeLines(phasesFile(logs));
  const rec = new PhaseRecorder({ monotonic: () => performance.now() });
  const { podSandboxId } = await cri.runPodSandbox({ config, runtimeHandler: handler });
  rec.lap('RunPodSandbox (runtime start, sandbox VM, CNI network into it)');
  try {
    const { containerId } = await cri.createContainer({
      podSandboxId,
      sandboxConfig: config,
      config: {
        metadata: { name: 'app' },
        image: { image: BUSYBOX_IMAGE },
        command: ['sh', '-c', 'while :; do sleep 1; done'],
        logPath: 'app.log',
      },
    });
    rec.lap('CreateContainer (snapshot, rootfs into the VM)');
    await cri.startContainer({ containerId });
    rec.lap('StartContainer (the process in the guest)');
    daemonFigures(phasesFile(logs), rec);
    const phases = rec.report();
    return { ms: phases.totalMs, phases, nodeStarts: nodes.take() };
  } finally {
    await cri.stopPodSandbox({ podSandboxId });
    await cri.removePodSandbox({ podSandboxId });
  }
}

/** The rows of `runs` of one setup: the pod start, with its phases, and the Node processes per pod. */
function podRows(what: string, runs: PodStart[]): Row[] {
  const name = `pod start through CRI (RunPodSandbox → container running), ${what}`;
  return [
    {
      name,
      unit: 'ms',
      summary: summarize(runs.map((r) => r.ms)),
      phases: phaseTable(runs.map((r) => r.phases)),
    },
    {
      name: `Node processes started per pod, ${what}`,
      unit: 'count',
      summary: summarize(runs.map((r) => r.nodeStarts)),
    },
  ];
}

/**
 * Pod start through Debian's containerd 1.6 with its CRI plugin and CNI (bridge + host-local), vmcache as the
 * runtime handler, both ways it is deployed: `vmcache-v2` (the shim v2: one daemon per pod) and `vmcache`
 * (containerd's runc shim running the vmcache CLI); each with no cache (each pod's VM boots cold) and with a
 * cache server of 2 (measured with the pool full). Debian's runc as the handler is the no-VM reference.
 */
export async function criRows(
  repo: string,
  deps: VmDeps,
  n: number,
  log: (s: string) => void,
): Promise<Row[]> {
  const dir = '/tmp/vmc-bench-cri';
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const nodes = nodeCounter(dir);
  const cold = `${dir}/cold.toml`;
  writeFileSync(cold, '[factory]\nvm_cache_number = 0\n');
  const coldEnv = { ...process.env, VMCACHE_CONFIG: cold, VMCACHE_RUN_DIR: deps.paths.runDir };
  const node = (env: NodeJS.ProcessEnv) =>
    startCriNode({
      dir: `${dir}/node`,
      env: { ...env, ...nodes.env, VMCACHE_PHASES: phasesFile(`${dir}/logs`) },
      bridge: 'vmcbenchcri',
      subnet: '198.19.8.0/24',
    });
  const rows: Row[] = [];
  const pods = async (
    cri: CriClient,
    handler: string,
    tag: string,
    count: number,
    before?: () => Promise<void>,
  ) => {
    const runs: PodStart[] = [];
    for (let i = 0; i < count; i++) {
      await before?.();
      log(`CRI pod start, ${handler}, ${tag} ${i + 1}`);
      runs.push(
        await podStart(cri, handler, `${tag}${handler.replace(/\W/g, '')}${i}`, `${dir}/logs`, nodes),
      );
    }
    return runs;
  };

  log('containerd (CRI) with vmcache, no cache');
  let cri = await node(coldEnv);
  try {
    const count = Math.max(2, Math.ceil(n / 3));
    rows.push(
      ...podRows(
        'shim v2 (vmcache-v2), no cache (cold boot)',
        await pods(cri.cri, 'vmcache-v2', 'cold', count),
      ),
    );
    rows.push(
      ...podRows(
        'runc-CLI path (vmcache), no cache (cold boot)',
        await pods(cri.cri, 'vmcache', 'cold', count),
      ),
    );
  } finally {
    await cri.stop();
  }

  log('starting a cache server with 2 slots for the CRI rows');
  const server = await startBenchCache(repo, deps, dir, 2);
  try {
    cri = await node(server.env);
    try {
      const full = () => server.waitFull();
      rows.push(
        ...podRows(
          'shim v2 (vmcache-v2), from the cache (pool full)',
          await pods(cri.cri, 'vmcache-v2', 'hot', n, full),
        ),
      );
      rows.push(
        ...podRows(
          'runc-CLI path (vmcache), from the cache (pool full)',
          await pods(cri.cri, 'vmcache', 'hot', n, full),
        ),
      );
      rows.push(...podRows('runc (no VM, reference)', await pods(cri.cri, 'runc', 'runc', n)));
    } finally {
      await cri.stop();
    }
  } finally {
    await server.stop();
  }
  rmSync(dir, { recursive: true, force: true });
  return rows;
}
