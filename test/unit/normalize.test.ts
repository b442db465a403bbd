import { normalizeTaskBody } from '../../src/tes/normalize.js';
import { checkTaskRules } from '../../src/tes/validate-task.js';

const RULES = { maxContentBytes: 128 * 1024, supportedBackendParameters: ['partition', 'account'] };

describe('normalizeTaskBody', () => {
  it('drops JSON null anywhere', () => {
    expect(
      normalizeTaskBody({
        name: null,
        tags: { a: null, b: 'x' },
        executors: [{ image: 'alpine', command: ['true'], env: null, stdin: null }, null],
        resources: { backend_parameters: { q: null } },
      }),
    ).toEqual({
      tags: { b: 'x' },
      executors: [{ image: 'alpine', command: ['true'] }],
      resources: { backend_parameters: {} },
    });
  });

  it("accepts the camelCase names of Funnel's client", () => {
    expect(
      normalizeTaskBody({
        resources: {
          cpuCores: 2,
          ramGb: 1.5,
          diskGb: 3,
          backendParameters: { partitionName: 'x' },
          backendParametersStrict: true,
        },
        executors: [{ image: 'a', command: ['b'], ignoreError: true }],
        outputs: [{ path: '/o/*', url: 'file:///x/', pathPrefix: '/o/' }],
      }),
    ).toEqual({
      resources: {
        cpu_cores: 2,
        ram_gb: 1.5,
        disk_gb: 3,
        backend_parameters: { partitionName: 'x' },
        backend_parameters_strict: true,
      },
      executors: [{ image: 'a', command: ['b'], ignore_error: true }],
      outputs: [{ path: '/o/*', url: 'file:///x/', path_prefix: '/o/', type: 'FILE' }],
    });
  });

  it('keeps the keys of user maps as sent', () => {
    const body = normalizeTaskBody({
      tags: { cpuCores: '1' },
      executors: [{ image: 'a', command: ['b'], env: { ramGb: '1' } }],
    });
    expect(body).toEqual({
      tags: { cpuCores: '1' },
      executors: [{ image: 'a', command: ['b'], env: { ramGb: '1' } }],
    });
  });

  it('defaults a missing input or output type to FILE', () => {
    expect(
      normalizeTaskBody({
        inputs: [{ path: '/a', url: '/b' }],
        outputs: [{ path: '/c', url: '/d', type: 'DIRECTORY' }],
      }),
    ).toEqual({
      inputs: [{ path: '/a', url: '/b', type: 'FILE' }],
      outputs: [{ path: '/c', url: '/d', type: 'DIRECTORY' }],
    });
  });

  it('drops read-only fields a client echoes', () => {
    expect(
      normalizeTaskBody({
        id: 'x',
        state: 'COMPLETE',
        logs: [],
        creation_time: 'now',
        creationTime: 'now',
        name: 'n',
      }),
    ).toEqual({
      name: 'n',
    });
  });
});

describe('checkTaskRules', () => {
  const valid = { executors: [{ image: 'alpine', command: ['true'] }] };

  it('accepts a plain task', () => {
    expect(checkTaskRules(valid, RULES)).toEqual({ problems: [], ignoredBackendParameters: [] });
  });

  it('reports every problem at once with its field path', () => {
    const { problems } = checkTaskRules(
      {
        executors: [{ image: '', command: [], workdir: 'rel', env: { '1BAD': 'x' } }],
        inputs: [{ path: 'in', url: 'file:///x', content: 'y' }, { path: '/b' }],
        outputs: [{ path: '/o', url: '' }],
        volumes: ['/v/../etc'],
        resources: { cpu_cores: 0, ram_gb: -1 },
      },
      RULES,
    );
    expect(problems.map((p) => `${p.path}: ${p.message}`)).toEqual([
      'executors[0].image: must not be empty',
      'executors[0].command: must not be empty',
      'executors[0].workdir: must be an absolute path',
      'executors[0].env.1BAD: must be a variable name of letters, digits and _, not starting with a digit',
      'inputs[0].path: must be an absolute path',
      'inputs[0]: must set either url or content, not both',
      'inputs[1]: must set url or content',
      'outputs[0].url: must not be empty',
      "volumes[0]: must not contain '..'",
      'resources.cpu_cores: must be greater than 0',
      'resources.ram_gb: must be greater than 0',
    ]);
  });

  it('requires at least one executor', () => {
    expect(checkTaskRules({ executors: [] }, RULES).problems).toEqual([
      { path: 'executors', message: 'must list at least one executor' },
    ]);
  });

  it('limits content to the configured size, at least 128 KiB', () => {
    const at = 'x'.repeat(128 * 1024);
    expect(checkTaskRules({ ...valid, inputs: [{ path: '/a', content: at }] }, RULES).problems).toEqual([]);
    expect(
      checkTaskRules({ ...valid, inputs: [{ path: '/a', content: `${at}x` }] }, RULES).problems[0]?.path,
    ).toBe('inputs[0].content');
  });

  it('refuses unsupported backend_parameters when strict, naming them', () => {
    const body = {
      ...valid,
      resources: {
        backend_parameters: { partition: 'a', gpu_type: 'x', zone: 'y' },
        backend_parameters_strict: true,
      },
    };
    expect(checkTaskRules(body, RULES).problems).toEqual([
      {
        path: 'resources.backend_parameters',
        message: 'unsupported keys gpu_type, zone (supported: partition, account)',
      },
    ]);
  });

  it('ignores unsupported backend_parameters when not strict and says which', () => {
    const body = { ...valid, resources: { backend_parameters: { gpu_type: 'x' } } };
    expect(checkTaskRules(body, RULES)).toEqual({ problems: [], ignoredBackendParameters: ['gpu_type'] });
  });
});
