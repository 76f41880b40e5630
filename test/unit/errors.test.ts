import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ErrorCodes, isVmcError, VmcError } from '../../src/errors.js';
import { GuestErrorCodes } from '../../src/protocol/agent/guest-codes.js';

const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
const GUEST_SECTION = '## Guest agent codes';

describe('error codes', () => {
  it('are all documented in docs/errors.md, and the document lists no others', () => {
    const documented = new Set([...doc.matchAll(/`(VMC_ERR_[A-Z_]+)`/g)].map((m) => m[1]));
    assert.deepEqual([...documented].sort(), Object.keys(ErrorCodes).sort());
  });

  it("of the guest agent are all in the document's section of their own, with no others there", () => {
    const at = doc.indexOf(GUEST_SECTION);
    assert.ok(at >= 0, `docs/errors.md has a "${GUEST_SECTION}" section`);
    const section = doc.slice(at).split(/\n## /)[0]!;
    const rows = [...section.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
    assert.deepEqual(rows.sort(), Object.keys(GuestErrorCodes).sort());
  });

  it('follow the VMC_ERR_<AREA>_<WHAT> pattern', () => {
    for (const code of Object.keys(ErrorCodes)) assert.match(code, /^VMC_ERR_[A-Z]+_[A-Z_]+$/);
  });

  it('include VMC_ERR_AGENT_PROCESS_LOST, which callers of AgentProcess.wait() match on', () => {
    assert.ok(Object.hasOwn(ErrorCodes, 'VMC_ERR_AGENT_PROCESS_LOST'));
  });

  it('keep the cause and details', () => {
    const cause = new Error('inner');
    const e = new VmcError('VMC_ERR_VM_DEAD', 'outer', { cause, details: { vmId: 'x' } });
    assert.equal(e.cause, cause);
    assert.equal(e.details.vmId, 'x');
    assert.ok(isVmcError(e, 'VMC_ERR_VM_DEAD'));
    assert.equal(isVmcError(e, 'VMC_ERR_CLI_USAGE'), false);
  });
});
