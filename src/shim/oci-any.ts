import { parseProcess } from '../oci/process.js';
import { type ResourceUpdate, resourceUpdateOf } from '../oci/resource-update.js';
import { At } from '../oci/validate.js';
import type { ExecProcess } from '../protocol/agent/messages.js';
import type { Any } from '../protocol/shim/generated/google/protobuf/any.js';
import { agentProcess } from '../sandbox/process.js';
import { bad } from './request-checks.js';

/** The type containerd gives an exec's spec (an OCI runtime-spec Process as JSON). */
export const PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
/** The type containerd gives an update's resources (an OCI runtime-spec LinuxResources as JSON). */
export const RESOURCES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';

/** The JSON object an Any of OCI type `url` (containerd's typeurl for runtime-spec types) holds, at `field`. */
function ociJson(any: Any | undefined, field: string, url: string): At {
  const name = url.slice(url.lastIndexOf('/') + 1);
  if (!any) bad(field, `an OCI ${name} (Any)`, 'nothing');
  if (any.typeUrl !== url && !any.typeUrl.endsWith(`/${name}`)) bad(`${field}.type_url`, url, any.typeUrl);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(any.value).toString('utf8'));
  } catch (e) {
    bad(`${field}.value`, 'JSON', (e as Error).message);
  }
  const a = new At(json, '', field);
  a.object();
  return a;
}

/**
 * What an ExecProcessRequest's spec asks to run (an empty command is refused). Its `terminal` is read for
 * type only: the request's own `terminal` field says whether the exec gets a pty.
 */
export function execProcessOfSpec(spec: Any | undefined, field = 'ExecProcessRequest.spec'): ExecProcess {
  const a = ociJson(spec, field, PROCESS_TYPE_URL);
  a.get('terminal').optional((t) => t.bool());
  const p = parseProcess(a, field, 'exec');
  if (p.args.length === 0 || p.args[0] === '') bad(`${field}.args`, 'a non-empty command', '[]');
  return agentProcess(p);
}

/** What an UpdateTaskRequest's resources ask for (CRI's UpdateContainerResources); see resourceUpdateOf. */
export function resourceUpdateOfAny(
  resources: Any | undefined,
  warn: (msg: string) => void,
  field = 'UpdateTaskRequest.resources',
): ResourceUpdate {
  return resourceUpdateOf(ociJson(resources, field, RESOURCES_TYPE_URL), warn);
}
