import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The suite itself runs on the Node.js that package.json asks for (scripts/node-env.sh sees to it). */
describe('the Node.js version', () => {
  it("is at least package.json's engines.node", () => {
    const manifest = JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as {
      engines: { node: string };
    };
    const wanted = /^>=(\d+)$/.exec(manifest.engines.node);
    expect(wanted).not.toBeNull();
    const major = Number(process.versions.node.split('.')[0]);
    expect(`node ${process.versions.node}: major ${major >= Number(wanted![1]) ? 'ok' : 'too old'}`).toBe(
      `node ${process.versions.node}: major ok`,
    );
  });
});
