import { unixSocketPathProblem } from '../platform/unix-socket.js';

/** Where the metrics are served: nowhere, a loopback TCP port, or a Unix socket. */
type MetricsEndpoint =
  | { kind: 'off' }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string };

/** A loopback address and port; metrics are never served on other interfaces. */
const LOOPBACK = /^(127\.0\.0\.1|localhost|\[::1\]):(\d{1,5})$/;

/** Reads `[cache] metrics_endpoint` (validated at load by {@link metricsEndpointProblem}). */
export function parseMetricsEndpoint(endpoint: string): MetricsEndpoint {
  if (endpoint === '') return { kind: 'off' };
  const m = LOOPBACK.exec(endpoint);
  if (!m) return { kind: 'unix', path: endpoint };
  const host = m[1] === 'localhost' ? '127.0.0.1' : m[1] === '[::1]' ? '::1' : m[1]!;
  return { kind: 'tcp', host, port: Number(m[2]) };
}

/** What `endpoint` lacks to be a metrics endpoint (phrased to follow "must be"), or null when it is one. */
export function metricsEndpointProblem(endpoint: string): string | null {
  const e = parseMetricsEndpoint(endpoint);
  if (e.kind === 'off') return null;
  if (e.kind === 'tcp')
    return e.port >= 1 && e.port <= 65535 ? null : 'a loopback address with a port from 1 to 65535';
  if (!e.path.startsWith('/')) return '"" (off), an absolute Unix socket path, or 127.0.0.1:PORT';
  return unixSocketPathProblem(e.path);
}
