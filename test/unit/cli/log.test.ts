import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lineLogger } from '../../../src/cli/log.js';

describe('CLI log lines (lineLogger)', () => {
  it("writes runc's log lines: logrus JSON (level, msg, time) or logfmt text", () => {
    const lines: string[] = [];
    const json = lineLogger((l) => lines.push(l), 'json', 'info');
    json.debug({}, 'dropped');
    json.warn({ id: 'c1' }, 'careful');
    json.error({}, 'it broke');
    assert.equal(lines.length, 2);
    const [w, e] = lines.map((l) => JSON.parse(l) as Record<string, string>);
    assert.equal(w!.level, 'warning');
    assert.equal(w!.id, 'c1');
    assert.equal(e!.level, 'error');
    assert.equal(e!.msg, 'it broke');
    assert.ok(!Number.isNaN(Date.parse(e!.time!)));
    lines.length = 0;
    lineLogger((l) => lines.push(l), 'text', 'debug').error({ id: 'c 1' }, 'no "way"');
    assert.match(lines[0]!, /^time="[^"]+" level=error msg="no \\"way\\"" id="c 1"\n$/);
  });

  it('writes terminal lines: vmcache: LEVEL: message key=value', () => {
    const lines: string[] = [];
    const log = lineLogger((l) => lines.push(l), 'human', 'warn').child({ vm: 'v1' });
    log.info({}, 'dropped');
    log.warn({ n: 2, s: 'a b' }, 'careful');
    lineLogger((l) => lines.push(l), 'human', 'debug').debug({}, 'bare');
    assert.deepEqual(lines, ['vmcache: warn: careful vm=v1 n=2 s=a b\n', 'vmcache: debug: bare\n']);
  });
});
