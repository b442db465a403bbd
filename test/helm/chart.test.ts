import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config/load-config.js';
import { ROOT } from '../helpers/gateway.js';

/**
 * The Helm chart, rendered as `helm template` renders it (test/helm/render: Go's text/template with
 * the sprig functions, as in Helm, built from Debian's packages since Helm itself cannot be
 * installed here). Each rendering is parsed as Kubernetes objects, and the configuration file it
 * writes is loaded by the gateway's own loader with the environment the Deployments give it.
 */

const CHART = join(ROOT, 'helm', 'tes-gateway');
const RENDERER = join(ROOT, '.tmp', 'helm-render');

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

interface Container {
  name: string;
  env?: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }>;
  ports?: Array<{ name: string; containerPort: number }>;
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}

beforeAll(() => {
  mkdirSync(join(ROOT, '.tmp'), { recursive: true });
  // GOPATH mode: the sources of sprig and yaml come from Debian's golang-*-dev packages.
  const build = (): Buffer =>
    execFileSync('go', ['build', '-o', RENDERER, './test/helm/render'], {
    cwd: ROOT,
    env: {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH: '/usr/share/gocode',
      GOCACHE: join(ROOT, '.tmp', 'go-cache'),
    },
    stdio: 'pipe',
  });
  try {
    build();
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(
      `the chart's renderer did not build; it needs golang-go, golang-github-masterminds-sprig-dev and ` +
        `golang-gopkg-yaml.v2-dev (bash scripts/install-deps.sh): ${(err as Error).message} ${stderr}`,
    );
  }
}, 300_000);

/** Renders the chart with `values` over its own; the objects, or the failure's message. */
function render(values: Record<string, unknown> = {}): { objects: K8sObject[]; error?: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tesgw-helm-'));
  const file = join(dir, 'values.yaml');
  writeFileSync(file, JSON.stringify(values));
  const run = spawnSync(RENDERER, [CHART, '-f', file], { encoding: 'utf8' });
  if (run.status !== 0) return { objects: [], error: run.stderr.trim() };
  const objects = parseAllDocuments(run.stdout)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
  return { objects };
}

function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) {
    throw new Error(`no ${kind} ${name} in ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}`);
  }
  return found;
}

function containerOf(deployment: K8sObject, name: string): Container {
  const pod = (deployment.spec as { template: { spec: { containers: Container[] } } }).template.spec;
  const c = pod.containers.find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name} in ${deployment.metadata.name}`);
  return c;
}

/** The configuration the gateway would run with: the ConfigMap's file and the Deployment's plain env. */
function gatewayConfig(objects: K8sObject[], container: Container, secretEnv: Record<string, string>) {
  const file = find(objects, 'ConfigMap', 'release-tes-gateway').data!['gateway.yaml']!;
  const dir = mkdtempSync(join(tmpdir(), 'tesgw-helm-config-'));
  const path = join(dir, 'gateway.yaml');
  writeFileSync(path, file);
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    const ref = e.valueFrom?.secretKeyRef;
    if (ref && secretEnv[ref.key] !== undefined) env[e.name] = secretEnv[ref.key]!;
  }
  return loadConfig({ env: { ...env, TES_GATEWAY_CONFIG: path } });
}

const DEPLOYABLE = {
  // What every site sets: its shared folders.
  config: { container: { imageCacheDir: '/shared/tes-gateway/images' } },
  workRoot: { existingClaim: 'work' },
  imageCache: { existingClaim: 'images' },
};

describe('the Helm chart', () => {
  it('renders the API, the workers, their Service, ConfigMap and Secret, and no ServiceMonitor', () => {
    const { objects, error } = render(DEPLOYABLE);
    expect(error).toBeUndefined();
    const kinds = objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(kinds).toEqual(
      [
        'ConfigMap/release-tes-gateway',
        'Deployment/release-tes-gateway-api',
        'Deployment/release-tes-gateway-worker',
        'Secret/release-tes-gateway',
        'Service/release-tes-gateway',
      ].sort(),
    );
  });

  it('probes both Deployments on /healthz and /readyz, at ports their containers open', () => {
    const { objects } = render(DEPLOYABLE);
    for (const [deployment, container] of [
      ['release-tes-gateway-api', 'api'],
      ['release-tes-gateway-worker', 'worker'],
    ] as const) {
      const c = containerOf(find(objects, 'Deployment', deployment), container);
      expect(c.livenessProbe?.httpGet?.path).toBe('/healthz');
      expect(c.readinessProbe?.httpGet?.path).toBe('/readyz');
      const ports = new Set((c.ports ?? []).flatMap((p) => [p.name, p.containerPort]));
      expect(ports.has(c.livenessProbe!.httpGet!.port)).toBe(true);
      expect(ports.has(c.readinessProbe!.httpGet!.port)).toBe(true);
    }
  });

  it("writes a configuration the gateway loads, with the Secret's Redis URL", () => {
    const { objects } = render(DEPLOYABLE);
    const secret = find(objects, 'Secret', 'release-tes-gateway').stringData!;
    const worker = containerOf(find(objects, 'Deployment', 'release-tes-gateway-worker'), 'worker');
    const config = gatewayConfig(objects, worker, secret);
    expect(config.redis).toMatchObject({ url: 'redis://redis:6379/0' });
    expect(config.workRoot).toBe('/shared/tes-gateway/tasks');
    expect(config.worker.http.port).toBe(
      (worker.ports ?? []).find((p) => p.name === 'metrics')?.containerPort,
    );
  });

  it('adds a ServiceMonitor over the API and the workers when asked', () => {
    const { objects } = render({ ...DEPLOYABLE, metrics: { serviceMonitor: { enabled: true } } });
    const monitor = find(objects, 'ServiceMonitor', 'release-tes-gateway');
    const endpoints = (monitor.spec as { endpoints: Array<{ port: string; path: string }> }).endpoints;
    expect(endpoints.map((e) => [e.port, e.path])).toEqual([
      ['http', '/metrics'],
      ['metrics', '/metrics'],
    ]);
    const workers = find(objects, 'Service', 'release-tes-gateway-worker-metrics');
    expect((workers.spec as { clusterIP: string }).clusterIP).toBe('None');
  });

  it("makes no Secret with existingSecret, and reads the site's", () => {
    const { objects } = render({ ...DEPLOYABLE, existingSecret: 'site-redis' });
    expect(objects.some((o) => o.kind === 'Secret')).toBe(false);
    const api = containerOf(find(objects, 'Deployment', 'release-tes-gateway-api'), 'api');
    const url = api.env?.find((e) => e.name === 'TES_GATEWAY_REDIS_URL');
    expect(url?.valueFrom?.secretKeyRef).toEqual({ name: 'site-redis', key: 'redis-url' });
  });

  it.each([
    [{ config: { redis: { url: 'redis://:pw@r:6379' } } }, /config\.redis\.url would put the Redis URL/],
    [{ config: { identity: { runAs: 'user' } } }, /config\.identity\.runAs: user is not supported by this chart/],
  ])('refuses values that cannot work, saying why (%j)', (values, message) => {
    const { error } = render({ ...DEPLOYABLE, ...values, config: { ...DEPLOYABLE.config, ...values.config } });
    expect(error).toMatch(message);
  });
});
