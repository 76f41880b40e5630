/** vmcache's internal container states. */
export type InternalState = 'ready' | 'running' | 'stopped' | 'paused';
/** OCI runtime-spec states. */
export type OciStatus = 'creating' | 'created' | 'running' | 'stopped' | 'paused';

const MAP: Record<InternalState, OciStatus> = {
  ready: 'created',
  running: 'running',
  stopped: 'stopped',
  paused: 'paused',
};

/** The OCI status of an internal state (as Kata's `StateToOCIState`: ready → created). */
export function toOciStatus(s: InternalState): OciStatus {
  return MAP[s];
}
