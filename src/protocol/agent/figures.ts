/**
 * The agent's traces as figures of a phase breakdown: a handshake's or a request's host round trip, what the
 * guest measured on its own clock (handling, share mount, fork + exec, a container's set-up), and what is left
 * outside the guest (transport through virtio-serial and both event loops).
 */
import type { PhaseRecorder } from '../../platform/phases.js';
import type { HandshakeTrace } from './client.js';
import type { RequestTrace } from './process.js';

const ms = (us: number) => us / 1000;

/** Adds the figures of a handshake to phase `phase`. */
export function handshakeFigures(rec: PhaseRecorder, phase: string, t: HandshakeTrace): void {
  const rtt = t.answeredMs - t.startedMs;
  rec.figure(phase, 'hello: first hello sent → hello-ok received', rtt, 'host');
  const g = t.guest;
  if (!g) return;
  rec.figure(phase, 'hello: connection seen → hello read', ms(g.rx - g.conn), 'guest');
  rec.figure(phase, 'hello: read → answered', ms(g.tx - g.rx), 'guest');
}

/** Adds the figures of a request to phase `phase`. */
export function requestFigures(rec: PhaseRecorder, phase: string, t: RequestTrace): void {
  const rtt = t.receivedMs - t.sentMs;
  rec.figure(phase, `${t.op}: round trip`, rtt, 'host');
  const g = t.guest;
  if (!g) return;
  const handling = ms(g.tx - g.rx);
  rec.figure(phase, `${t.op}: handling (read → answered)`, handling, 'guest');
  if (g.share !== undefined) rec.figure(phase, `${t.op}: mount the share`, ms(g.share), 'guest');
  if (g.spawn !== undefined) rec.figure(phase, `${t.op}: fork + exec`, ms(g.spawn), 'guest');
  if (g.enter !== undefined)
    rec.figure(phase, `${t.op}: container set-up (namespaces, mounts, exec)`, ms(g.enter), 'guest');
  if (g.nicWait !== undefined)
    rec.figure(
      phase,
      `${t.op}: wait for the NIC (to appear, or the spare's warm-up)`,
      ms(g.nicWait),
      'guest',
    );
  if (g.nicConfig !== undefined)
    rec.figure(
      phase,
      `${t.op}: MAC, MTU, link up, addresses, routes (rtnetlink, vmc-helper)`,
      ms(g.nicConfig),
      'guest',
    );
  // Durations on the two clocks are comparable (both tick in real time); their instants are not.
  rec.figure(phase, `${t.op}: outside the guest (transport, event loops)`, rtt - handling, 'host');
}
