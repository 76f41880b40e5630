import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  type CallOptions,
  type ClientUnaryCall,
  credentials,
  Metadata,
  type ServiceError,
} from '@grpc/grpc-js';
import { runCommand } from '../../src/platform/command.js';
import { unmountAllUnder } from '../../src/platform/mounts.js';
import { finished, REPO, run } from './cli.js';
import * as api from './cri/generated/cri/api.js';
import { busyboxImageArchive } from './oci-image.js';
import { pidsMentioning } from './vm-env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The image references a CRI node has imported: the sandbox (pause) image and a busybox image. */
export const PAUSE_IMAGE = 'docker.io/vmcache/pause:test';
export const BUSYBOX_IMAGE = 'docker.io/vmcache/busybox:test';

type Callback<Res> = (err: ServiceError | null, res: Res) => void;
type Unary<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: Partial<CallOptions>,
  cb: Callback<Res>,
) => ClientUnaryCall;

/**
 * One unary RPC of the generated client as a promise with a deadline; the request may leave out fields (as a
 * kubelet's does), which take protobuf's defaults.
 */
function unary<Req, Res>(
  client: api.RuntimeServiceClient,
  method: Unary<Req, Res>,
  type: api.MessageFns<Req>,
) {
  return (req: api.DeepPartial<Req>, timeoutMs = 180_000) =>
    new Promise<Res>((resolve, reject) =>
      method.call(
        client,
        type.fromPartial(req),
        new Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, res) => (err ? reject(err) : resolve(res)),
      ),
    );
}

/** The CRI RuntimeService calls the tests and the bench make, as promises (what a kubelet would call). */
export function criClient(socket: string) {
  const c = new api.RuntimeServiceClient(`unix://${socket}`, credentials.createInsecure());
  return {
    version: unary(c, c.version, api.VersionRequest),
    runPodSandbox: unary(c, c.runPodSandbox, api.RunPodSandboxRequest),
    stopPodSandbox: unary(c, c.stopPodSandbox, api.StopPodSandboxRequest),
    removePodSandbox: unary(c, c.removePodSandbox, api.RemovePodSandboxRequest),
    podSandboxStatus: unary(c, c.podSandboxStatus, api.PodSandboxStatusRequest),
    listPodSandbox: unary(c, c.listPodSandbox, api.ListPodSandboxRequest),
    createContainer: unary(c, c.createContainer, api.CreateContainerRequest),
    startContainer: unary(c, c.startContainer, api.StartContainerRequest),
    stopContainer: unary(c, c.stopContainer, api.StopContainerRequest),
    removeContainer: unary(c, c.removeContainer, api.RemoveContainerRequest),
    containerStatus: unary(c, c.containerStatus, api.ContainerStatusRequest),
    execSync: unary(c, c.execSync, api.ExecSyncRequest),
    /** A streaming exec's URL on containerd's streaming server (`streamExec` in cri-stream.ts attaches to it). */
    exec: unary(c, c.exec, api.ExecRequest),
    updateContainerResources: unary(c, c.updateContainerResources, api.UpdateContainerResourcesRequest),
    containerStats: unary(c, c.containerStats, api.ContainerStatsRequest),
    listContainerStats: unary(c, c.listContainerStats, api.ListContainerStatsRequest),
    close: () => c.close(),
  };
}
export type CriClient = ReturnType<typeof criClient>;

/** The named network namespaces (`ip netns`), where CNI's pods live. */
function netnsNames(): string[] {
  return existsSync('/run/netns') ? readdirSync('/run/netns') : [];
}

/** Where containerd 1.6's shims put their sockets, whatever containerd's state directory. */
const SHIM_SOCKETS = '/run/containerd/s';
function shimSockets(): string[] {
  return existsSync(SHIM_SOCKETS) ? readdirSync(SHIM_SOCKETS) : [];
}

/** Where a CRI node lives and how it is wired. */
export interface CriNodeOptions {
  /** A private directory for containerd's root, state, socket, CNI configuration and images. */
  dir: string;
  /** The environment containerd (and so its shims and vmcache) runs with. */
  env: NodeJS.ProcessEnv;
  /** The host bridge CNI makes (≤ 15 characters). */
  bridge: string;
  /** The pods' subnet, inside 198.18.0.0/15 (the benchmarking range): `198.19.0.0/24`. */
  subnet: string;
}

/** A running containerd with its CRI plugin, runtime handlers `vmcache`, `vmcache-v2` and `runc`, and CNI. */
export interface CriNode {
  cri: CriClient;
  /** The `vmcache --root` containerd's runc shim passes for the vmcache handler. */
  vmcacheRoot: string;
  /** The error lines of containerd's log so far (its own, its CRI plugin's, and what runtimes told its shims). */
  errors(): string[];
  stop(): Promise<void>;
}

/**
 * Starts Debian's containerd with its CRI plugin enabled, as a Kubernetes node runs it: the `vmcache` runtime
 * handler points containerd's runc shim at vmcache (`BinaryName`), `vmcache-v2` is vmcache's own shim v2
 * (`runtime_type` io.containerd.vmcache.v2), `runc` is Debian's runc (the baseline), CNI
 * is Debian's bridge + host-local plugins on `subnet`, and the sandbox image is a locally built busybox image
 * imported with `ctr images import` (no registry). `stop()` drains the node (every pod stopped and
 * removed), stops containerd and removes what is left: shims, network namespaces, mounts, the bridge, `dir`.
 */
export async function startCriNode(o: CriNodeOptions): Promise<CriNode> {
  const { dir, env } = o;
  rmSync(dir, { recursive: true, force: true }); // a node starts empty, as after its last stop
  const sock = join(dir, 'containerd.sock');
  const vmcacheRoot = join(dir, 'vmcache-root');
  mkdirSync(join(dir, 'net.d'), { recursive: true });
  writeFileSync(
    join(dir, 'net.d/10-pods.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'pods',
      plugins: [
        {
          type: 'bridge',
          bridge: o.bridge,
          isGateway: true,
          ipMasq: false,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: o.subnet }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: join(dir, 'ipam'),
          },
        },
      ],
    }),
  );
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  writeFileSync(
    join(dir, 'config.toml'),
    [
      'version = 2',
      `root = "${dir}/root"`,
      `state = "${dir}/state"`,
      '[grpc]',
      `  address = "${sock}"`,
      `[${cri}]`,
      `  sandbox_image = "${PAUSE_IMAGE}"`,
      // This machine's root cannot lower an OOM score (no CAP_SYS_RESOURCE); the pause container asks for -998.
      '  restrict_oom_score_adj = true',
      `[${cri}.cni]`,
      '  bin_dir = "/usr/lib/cni"',
      `  conf_dir = "${dir}/net.d"`,
      `[${cri}.containerd]`,
      '  default_runtime_name = "runc"',
      `[${cri}.containerd.runtimes.runc]`,
      '  runtime_type = "io.containerd.runc.v2"',
      `[${cri}.containerd.runtimes.runc.options]`,
      `  Root = "${dir}/runc-root"`,
      // The handler Kubernetes pods select with a RuntimeClass (deploy/kubernetes/containerd.toml).
      `[${cri}.containerd.runtimes.vmcache]`,
      '  runtime_type = "io.containerd.runc.v2"',
      `[${cri}.containerd.runtimes.vmcache.options]`,
      `  BinaryName = "${REPO}bin/vmcache"`,
      `  Root = "${vmcacheRoot}"`,
      // The same pods through vmcache's containerd shim v2: one daemon per pod, no runc shim, no CLI.
      `[${cri}.containerd.runtimes.vmcache-v2]`,
      // containerd 1.6.20 finds containerd-shim-vmcache-v2 on its PATH (with runtime_path alone: "not installed").
      '  runtime_type = "io.containerd.vmcache.v2"',
      '',
    ].join('\n'),
  );
  // containerd's log (and so the errors of its shims and runtimes) goes to a file a failing test can show.
  const log = openSync(join(dir, 'containerd.log'), 'a');
  const containerd: ChildProcess = spawn('containerd', ['--config', join(dir, 'config.toml')], {
    env: { ...env, PATH: `${REPO}bin:${env.PATH ?? process.env.PATH}` },
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  const done = finished(containerd);
  const ctr = (args: string[]) => run('ctr', ['--address', sock, '-n', 'k8s.io', ...args], env);
  const netnsBefore = new Set(netnsNames());
  const shimSocketsBefore = new Set(shimSockets());
  const stop = async () => {
    // A node drain: every pod stopped and removed, so that no shim, VM or network namespace outlives the node.
    const pods = await client.listPodSandbox({}, 10_000).catch(() => ({ items: [] }));
    for (const p of pods.items) {
      await client.stopPodSandbox({ podSandboxId: p.id }).catch(() => {});
      await client.removePodSandbox({ podSandboxId: p.id }).catch(() => {});
    }
    client.close();
    if (containerd.exitCode === null) containerd.kill('SIGTERM');
    await done;
    // Shims outlive containerd by design; those still here after the drain are this node's (by its socket).
    for (const pid of pidsMentioning(sock)) process.kill(pid, 'SIGKILL');
    // A shim killed that way leaves its socket in containerd's fixed /run/containerd/s.
    for (const f of shimSockets())
      if (!shimSocketsBefore.has(f)) rmSync(join(SHIM_SOCKETS, f), { force: true });
    for (const ns of netnsNames()) if (!netnsBefore.has(ns)) await runCommand('ip', ['netns', 'del', ns]);
    await unmountAllUnder(runCommand, dir);
    await runCommand('ip', ['link', 'del', o.bridge]).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  const client = criClient(sock);
  try {
    for (let i = 0; ; i++) {
      if (existsSync(sock) && (await client.version({ version: 'v1' }, 2000).catch(() => null))) break;
      if (i > 300 || containerd.exitCode !== null)
        assert.fail(`containerd did not start: ${readFileSync(join(dir, 'containerd.log'), 'utf8')}`);
      await sleep(100);
    }
    const images: [string, Parameters<typeof busyboxImageArchive>[2]][] = [
      // The sandbox's process only holds the pod's namespaces, as the pause image's does.
      [PAUSE_IMAGE, { Entrypoint: ['/bin/sleep', '2147483647'] }],
      [BUSYBOX_IMAGE, { Cmd: ['sh'] }],
    ];
    for (const [i, [name, proc]] of images.entries()) {
      const archive = busyboxImageArchive(join(dir, `image${i}`), name, proc);
      const r = await ctr(['images', 'import', archive]);
      assert.equal(r.code, 0, `ctr images import ${name}: ${r.stderr}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  const errors = () =>
    readFileSync(join(dir, 'containerd.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('level=error'));
  return { cri: client, vmcacheRoot, errors, stop };
}
