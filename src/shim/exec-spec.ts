import { parseProcess } from '../oci/process.js';
import { At } from '../oci/validate.js';
import type { ExecProcess } from '../protocol/agent/messages.js';
import type { Any } from '../protocol/shim/generated/google/protobuf/any.js';
import { agentProcess } from '../sandbox/process.js';
import { bad } from './request-checks.js';

/** The type containerd gives an exec's spec (an OCI runtime-spec Process as JSON). */
export const PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';

/**
 * What an ExecProcessRequest's spec asks to run (an empty command is refused). Its `terminal` is read for
 * type only: the request's own `terminal` field says whether the exec gets a pty.
 */
export function execProcessOfSpec(spec: Any | undefined, field = 'ExecProcessRequest.spec'): ExecProcess {
  if (!spec) bad(field, 'an OCI process (Any)', 'nothing');
  if (spec.typeUrl !== PROCESS_TYPE_URL && !spec.typeUrl.endsWith('/Process'))
    bad(`${field}.type_url`, PROCESS_TYPE_URL, spec.typeUrl);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(spec.value).toString('utf8'));
  } catch (e) {
    bad(`${field}.value`, 'JSON', (e as Error).message);
  }
  const a = new At(json, '', field);
  a.object();
  a.get('terminal').optional((t) => t.bool());
  const p = parseProcess(a, field, 'exec');
  if (p.args.length === 0 || p.args[0] === '') bad(`${field}.args`, 'a non-empty command', '[]');
  return agentProcess(p);
}
