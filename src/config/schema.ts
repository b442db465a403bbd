import { z } from 'zod';
import { parseNetworkEntry } from '../staging/network-policy.js';

/**
 * The one description of the gateway's configuration. Every object is strict: an unknown key is a
 * mistake (a typo would otherwise silently fall back to a default), so it fails the start.
 */

/** Every image URI scheme Apptainer knows. */
const IMAGE_SCHEMES = [
  'docker',
  'docker-archive',
  'docker-daemon',
  'oci',
  'oci-archive',
  'library',
  'oras',
  'shub',
  'http',
  'https',
] as const;

/** One Slurm partition: a comma would make it a list, which sbatch accepts and the limits do not see. */
const partitionName = z
  .string()
  .min(1)
  .regex(/^[^,\s]+$/, 'must be one partition name (no commas or white space)');

const partitionLimits = z
  .object({
    maxCpus: z.number().int().positive().optional(),
    maxMemoryMiB: z.number().int().positive().optional(),
  })
  .strict();

const absolutePath = z.string().startsWith('/', 'must be an absolute path');

const allowedRootObject = z.object({ path: absolutePath, writable: z.boolean().default(false) }).strict();

/**
 * One `storage.allowedRoots` entry, always `{ path, writable }` once read. A plain path and the
 * object form are told apart by type, so that a mistake is reported against the form it was meant in
 * (a union would only say that neither matched).
 */
const allowedRoot = z.unknown().transform((value, ctx): z.output<typeof allowedRootObject> => {
  if (typeof value !== 'string' && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: 'must be an absolute path, or { path: /abs/path, writable: true|false }',
    });
    return z.NEVER;
  }
  const parsed =
    typeof value === 'string'
      ? absolutePath.transform((path) => ({ path, writable: false })).safeParse(value)
      : allowedRootObject.safeParse(value);
  if (parsed.success) return parsed.data;
  for (const issue of parsed.error.issues) ctx.addIssue(issue);
  return z.NEVER;
});

/** A duration written as a number and a unit: `90d`, `12h`, `30m`, `2w`. */
export const DURATION = /^([1-9][0-9]{0,5})([mhdw])$/;

const duration = z.string().regex(DURATION, 'must be a number and a unit: 30m, 12h, 90d or 2w');

/**
 * A path template of the per-user policy: `{user}` is the caller's user name, `{group}` the group an
 * entry belongs to. A user name is checked before it is put in a path, so it never holds `/` or `..`.
 */
const rootTemplate = z.unknown().transform((value, ctx): z.output<typeof allowedRootObject> => {
  const parsed = allowedRoot.safeParse(value);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) ctx.addIssue(issue);
    return z.NEVER;
  }
  const unknown = parsed.data.path.match(/\{(?!user\}|group\})[^}]*\}/);
  if (unknown) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: `${unknown[0]} is not a name this gateway fills in; use {user} or {group}`,
    });
    return z.NEVER;
  }
  return parsed.data;
});

/** A Slurm account, partition or QOS name: one word, no commas. */
const slurmName = z
  .string()
  .min(1)
  .regex(/^[^,\s]+$/, 'must be one name (no commas or white space)');

/**
 * What one user, one group, or everyone may use. An unset list leaves that choice open at this level;
 * the lists that apply to a user are joined (see identity/policy.ts).
 */
const policyEntry = z
  .object({
    /** Host folders their `file://` inputs and outputs may name, beside storage.allowedRoots. */
    roots: z.array(rootTemplate).default([]),
    accounts: z.array(slurmName).optional(),
    partitions: z.array(slurmName).optional(),
    qos: z.array(slurmName).optional(),
    /** The Slurm account their jobs use when the task names none. */
    defaultAccount: slurmName.optional(),
  })
  .strict();

/** Accounts that are never people: the owner of a task is never one of them. */
export const DEFAULT_DENIED_USERS = [
  'root',
  'daemon',
  'bin',
  'sys',
  'sync',
  'games',
  'man',
  'lp',
  'mail',
  'news',
  'uucp',
  'proxy',
  'www-data',
  'backup',
  'list',
  'irc',
  'gnats',
  'nobody',
  'nogroup',
  'operator',
  'adm',
  'sshd',
  'messagebus',
  'systemd-network',
  'systemd-resolve',
  'systemd-timesync',
  '_apt',
  'slurm',
  'munge',
  'redis',
  'mysql',
  'postgres',
  'polkitd',
];

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** One Sentinel's address: `{ host, port }`, or `host:port` (the form the environment gives). */
const sentinelHostPort = z
  .object({ host: z.string().min(1), port: z.number().int().min(1).max(65535).default(26379) })
  .strict();
const sentinelAddress = z.unknown().transform((value, ctx): z.output<typeof sentinelHostPort> => {
  const match = typeof value === 'string' ? /^([^\s:]+):([0-9]{1,5})$/.exec(value) : null;
  if (typeof value === 'string' && !match) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be host:port, or { host, port }' });
    return z.NEVER;
  }
  const parsed = sentinelHostPort.safeParse(match ? { host: match[1], port: Number(match[2]) } : value);
  if (parsed.success) return parsed.data;
  for (const issue of parsed.error.issues) ctx.addIssue(issue);
  return z.NEVER;
});

/**
 * TLS to Redis: the files (PEM) that check the servers' certificates and, where the servers ask for
 * client certificates (`tls-auth-clients yes`), present the gateway's. Read once at start.
 */
const redisTls = z
  .object({
    /** The CA that signed the servers' certificates; without it, the system's CAs. */
    ca: absolutePath.optional(),
    /** The gateway's client certificate and its key, both or neither. */
    cert: absolutePath.optional(),
    key: absolutePath.optional(),
    /** The name the servers' certificates are checked against, when not the host connected to. */
    servername: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((tls, ctx) => {
    if ((tls.cert === undefined) !== (tls.key === undefined)) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: [tls.cert === undefined ? 'cert' : 'key'],
        message: 'a client certificate needs both cert and key',
      });
    }
  });

/**
 * Redis behind Sentinel: the gateway asks the sentinels which server is the master of `name`, and asks
 * again whenever a connection drops or a failover is announced, so every connection follows the master.
 */
const redisSentinel = z
  .object({
    /** The master's name in the sentinels' configuration (`sentinel monitor <name> ...`). */
    name: z.string().min(1),
    sentinels: z.array(sentinelAddress).min(1),
    /** For the Redis servers themselves (`requirepass`, or an ACL user with `username`). */
    username: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    /** For the sentinels, when they ask for one (`requirepass` in sentinel.conf). */
    sentinelUsername: z.string().min(1).optional(),
    sentinelPassword: z.string().min(1).optional(),
    db: z.number().int().min(0).default(0),
    /** The sentinels speak TLS too, checked with the files of redis.tls. */
    tls: z.boolean().default(false),
    /**
     * Replicas that must hold a new task before the API accepts it. Replication is asynchronous: a
     * task written to a master just before a failover is lost unless a replica holds it, so with
     * 0 an accepted task can vanish; with more than there are replicas, every creation answers 503.
     */
    acceptReplicas: z.number().int().min(0).default(1),
    /** How long a creation waits for those replicas before answering 503. */
    acceptTimeoutMs: z.number().int().min(10).max(60_000).default(1000),
  })
  .strict();

export const AUTH_MODES = ['none', 'tokens', 'oidc', 'tokens+oidc'] as const;

export const configSchema = z
  .object({
    server: z
      .object({
        // Only this host until an operator chooses to expose the API (turn on auth.mode first).
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8000),
        bodyLimitBytes: z
          .number()
          .int()
          .min(256 * 1024)
          .default(8 * 1024 * 1024),
        maxContentBytes: z
          .number()
          .int()
          .min(128 * 1024, 'must be at least 131072 (128 KiB), the size TES clients rely on')
          .default(1024 * 1024),
        maxBacklog: z.number().int().positive().default(100_000),
        /**
         * How long SIGTERM waits for requests in flight and running queue jobs before the gateway
         * stops anyway (jobs still running then are handed to another worker). Keep it below the
         * orchestrator's grace period (Kubernetes: 30 s by default).
         */
        shutdownTimeoutMs: z.number().int().min(0).default(25_000),
        /** Processes serving the API on one port (`tes-gateway api` only): reads scale with cores. */
        processes: z.number().int().positive().max(64).default(1),
        /** The read-only web dashboard at /ui (docs/operations.md, "Dashboard"). */
        dashboard: z.boolean().default(true),
        serviceInfo: z
          .object({
            id: z.string().min(1).default('org.ga4gh.tes-slurm-gateway'),
            name: z.string().min(1).default('TES gateway for Slurm'),
            description: z.string().default('Runs GA4GH TES tasks as Slurm jobs in Apptainer containers'),
            organization: z
              .object({ name: z.string().min(1), url: z.string().url() })
              .strict()
              .default({ name: 'Unnamed HPC site', url: 'https://example.org' }),
            contactUrl: z.string().optional(),
            documentationUrl: z.string().optional(),
            environment: z.string().optional(),
          })
          .strict()
          .default({}),
      })
      .strict()
      .default({}),
    /**
     * The shape of one task, checked at creation with a 400 naming the field and the limit, so that no
     * single request can make the gateway's own work (validation, storage, job script, reconciler,
     * listing) large. The request body as a whole stays under server.bodyLimitBytes, and an input's
     * `content` under server.maxContentBytes. Each default is far above what Cromwell, Nextflow,
     * Snakemake, Toil and Sprocket send: one or a few executors, a handful of arguments, inputs and
     * outputs in the hundreds for the largest scatter-gathers.
     */
    limits: z
      .object({
        /** Executors of one task (workflow engines send one; a few chain a setup step). */
        maxExecutors: z.number().int().positive().default(64),
        /** Inputs of one task: a whole directory is one input, so even large gathers stay far below. */
        maxInputs: z.number().int().positive().default(10_000),
        /** Outputs of one task, for the same reason. */
        maxOutputs: z.number().int().positive().default(10_000),
        /** Volumes of one task: each becomes a bind mount of the job. */
        maxVolumes: z.number().int().positive().default(1_000),
        /** Tags of one task: each is also a list index in Redis. */
        maxTags: z.number().int().positive().default(256),
        /** Environment variables of one executor: each is a line of the job script. */
        maxEnvPerExecutor: z.number().int().positive().default(1_000),
        /** Command arguments of one executor: each is a word of the job script. */
        maxCommandArgs: z.number().int().positive().default(10_000),
        /** backend_parameters entries of one task (the Slurm backend understands ten). */
        maxBackendParameters: z.number().int().positive().default(256),
        /** resources.zones entries of one task. */
        maxZones: z.number().int().positive().default(256),
        /**
         * Bytes (UTF-8) of any one string of a task: names, paths, URLs, images, each command argument,
         * env names and values, tag keys and values, backend_parameters. 128 KiB is Linux's limit on
         * one argument or environment string (MAX_ARG_STRLEN), so no command that could run is refused;
         * it cannot be set below 4 KiB, the length of a long path or URL.
         */
        maxStringBytes: z
          .number()
          .int()
          .min(4096)
          .default(128 * 1024),
        /**
         * Bytes of stored tasks one list page carries (BASIC and FULL views). A page that reaches it
         * stops early with a next_page_token; a page always holds at least one task, so listing
         * progresses whatever the size of one task.
         */
        listPageMaxBytes: z
          .number()
          .int()
          .min(64 * 1024)
          .default(4 * 1024 * 1024),
      })
      .strict()
      .default({}),
    /**
     * Where Redis is: one server by `url`, or the master that Sentinel names (`sentinel`), never both.
     * With neither, the local default url.
     */
    redis: z
      .object({
        url: z.string().url().optional(),
        sentinel: redisSentinel.optional(),
        /** TLS to the Redis servers (a `rediss://` url uses TLS with the system's CAs without it). */
        tls: redisTls.optional(),
        prefix: z
          .string()
          .min(1)
          .regex(/^[A-Za-z0-9_.:-]+$/, 'may hold only letters, digits and _ . : -')
          .default('tesgw:'),
      })
      .strict()
      .superRefine((redis, ctx) => {
        if (redis.sentinel?.tls && redis.tls === undefined) {
          ctx.addIssue({
            code: z.ZodIssueCode.custom,
            path: ['sentinel', 'tls'],
            message: 'TLS to the sentinels needs redis.tls (at least `{}` for the system CAs)',
          });
        }
        if (redis.url !== undefined && redis.sentinel !== undefined) {
          ctx.addIssue({
            code: z.ZodIssueCode.custom,
            path: ['sentinel'],
            message:
              'redis.url and redis.sentinel both say where Redis is; keep one (TES_GATEWAY_REDIS_URL also sets redis.url)',
          });
        }
      })
      .transform(({ url, sentinel, tls, prefix }) =>
        sentinel ? { sentinel, tls, prefix } : { url: url ?? DEFAULT_REDIS_URL, tls, prefix },
      )
      .default({}),
    backend: z.enum(['slurm', 'local']).default('slurm'),
    workRoot: z.string().startsWith('/', 'must be an absolute path').default('/var/lib/tes-gateway/tasks'),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        tailBytes: z
          .number()
          .int()
          .min(0)
          .default(64 * 1024),
        /**
         * Bytes of executor stdout and stderr tails kept for one task, all executors together (each
         * stream still at most tailBytes). A workflow engine's task has one or a few executors, whose
         * tails stay far below; a task with very many shares it fairly.
         */
        taskLogMaxBytes: z
          .number()
          .int()
          .min(0)
          .default(1024 * 1024),
      })
      .strict()
      .default({}),
    container: z
      .object({
        runtime: z.enum(['apptainer', 'singularity', 'bwrap-host']).default('apptainer'),
        /** The runtime on the compute nodes (job scripts call it). */
        executable: z.string().min(1).optional(),
        /** The runtime on the gateway host that pulls images, when it lives elsewhere; else `executable`. */
        pullExecutable: z.string().min(1).optional(),
        extraArgs: z.array(z.string()).default([]),
        imageCacheDir: z
          .string()
          .startsWith('/', 'must be an absolute path')
          .default('/var/lib/tes-gateway/images'),
        imageCacheMaxBytes: z.number().int().positive().optional(),
        pullTimeoutMs: z.number().int().positive().default(600000),
        pullAttempts: z.number().int().positive().default(3),
        pullBackoffMs: z.number().int().positive().default(2000),
        /**
         * Directories whose image files (`image: /path/x.sif`) tasks may run, judged after symbolic
         * links are resolved. Empty (the default): no local image file at all, since a task could
         * otherwise name any file the gateway can read, or one it wrote itself into its task directory.
         * The roots' own links are resolved again each minute.
         */
        imageRoots: z.array(z.string().startsWith('/', 'must be an absolute path')).default([]),
        /**
         * URI schemes an image may use; a bare reference (`alpine`, `quay.io/x/y:1`) means docker://.
         * The default leaves out the ones that read from the gateway host (docker-archive://,
         * oci-archive://, docker-daemon://, oci://), pull over plain http(s), or from the retired shub://.
         */
        allowedImageSchemes: z.array(z.enum(IMAGE_SCHEMES)).default(['docker', 'oras', 'library']),
      })
      .strict()
      .default({}),
    worker: z
      .object({
        /**
         * Submissions mostly wait (files, Redis, sbatch, and the helper's sudo call when tasks run as
         * their owners); sbatch itself is capped by slurm.maxConcurrentCalls. A burst goes to Slurm in
         * waves of this many tasks, each wave as few arrays: larger waves hand it over sooner, and
         * cost fewer sbatch calls (1,000 tasks alone: 1.7-1.8 s at 256, 3.1 s at 64).
         */
        submitConcurrency: z.number().int().positive().default(256),
        finalizeConcurrency: z.number().int().positive().default(32),
        // Exponential backoff: 8 attempts from 5 s ride out about 10 minutes of controller trouble.
        submitAttempts: z.number().int().positive().default(8),
        submitBackoffMs: z.number().int().positive().default(5000),
        /**
         * The listener of `tes-gateway worker` for /healthz, /readyz and /metrics (docs/operations.md).
         * Off unless a port is set: two workers on one host would otherwise fight over it. `serve`
         * answers those paths on the API's port and never opens this one.
         */
        http: z
          .object({
            host: z.string().min(1).default('127.0.0.1'),
            port: z.number().int().min(0).max(65535).optional(),
          })
          .strict()
          .default({}),
      })
      .strict()
      .default({}),
    /** Prometheus metrics on /metrics (docs/operations.md). */
    metrics: z
      .object({
        /**
         * false: no process records metrics or serves /metrics (it answers 404 saying so); the probes
         * stay. For sites that do not scrape, and for the bench's measure of what metrics cost.
         */
        enabled: z.boolean().default(true),
        /**
         * When set, /metrics answers only requests with `Authorization: Bearer <token>`; unset, anyone
         * who reaches the port may scrape (restrict it by network instead).
         */
        token: z.string().min(16, 'must be at least 16 characters').optional(),
        /**
         * With auth on: tasks created are counted by owner for the first this many users a process
         * sees, the rest as `other`; 0 leaves the per-user metric out.
         */
        userLabels: z.number().int().min(0).max(1000).default(50),
        /** How long a scrape reuses the task and queue counts it read from Redis. */
        cacheMs: z.number().int().min(0).max(300_000).default(5000),
      })
      .strict()
      .default({}),
    reconciler: z
      .object({
        pollIntervalMs: z.number().int().min(100).default(2000),
        leaderTtlMs: z.number().int().min(1000).default(15000),
      })
      .strict()
      .default({}),
    /**
     * How long finished work is kept. A task in a terminal state (COMPLETE, EXECUTOR_ERROR,
     * SYSTEM_ERROR, CANCELED, PREEMPTED) whose end is older than the retention expires: its record,
     * its index entries, its queue jobs and its task directory go. The reconciler's leader expires
     * them in the background; `tes-gateway gc` does it at once, or shows what would go (--dry-run).
     */
    retention: z
      .object({
        /**
         * Days a task is kept after it ended. 0 keeps finished tasks for ever (nothing expires), for
         * sites that archive or clean up by other means; Redis and the work root then grow with every
         * task. Fractions count: 0.25 keeps finished tasks six hours.
         */
        terminalTasksDays: z.number().min(0).default(30),
        /**
         * Terminal tasks one pass examines (the bound on each pass's Redis reads); passes follow one
         * another until every expired task has gone.
         */
        batchSize: z.number().int().positive().max(10_000).default(500),
        /** How often the leader looks for expired tasks; one run lasts at most this long. */
        intervalMs: z.number().int().min(1000).default(60_000),
      })
      .strict()
      .default({}),
    slurm: z
      .object({
        binDir: z.string().optional(),
        defaultPartition: partitionName.optional(),
        shortPartition: partitionName.optional(),
        shortMaxMinutes: z.number().int().positive().default(60),
        gpuPartition: partitionName.optional(),
        preemptiblePartition: partitionName.optional(),
        zonePartitions: z.boolean().default(true),
        limits: z.record(partitionName, partitionLimits).default({}),
        overLimit: z.enum(['clamp', 'refuse']).default('refuse'),
        extraArgs: z.array(z.string()).default([]),
        /**
         * Load the job user's login environment on the node (`sbatch --export=NONE`; slurmd runs
         * `su - <user>` before each job). Off: jobs get a small fixed environment and no login shell.
         * Only for a container runtime that the login environment puts on PATH (a module).
         */
        loginEnvironment: z.boolean().default(false),
        maxConcurrentCalls: z.number().int().positive().default(4),
        commandTimeoutMs: z.number().int().positive().default(30000),
        sacctChunkSize: z.number().int().min(1).max(15000).default(5000),
        // Submissions with the same request arriving within this window go as one job array (0: never).
        arrayWindowMs: z.number().int().min(0).default(25),
        maxArraySize: z.number().int().min(2).max(10_000).default(1000),
        missingGraceMs: z.number().int().min(0).default(120000),
        /**
         * What becomes of resources.disk_gb. `auto`: `sbatch --tmp` only where some node of the
         * task's partition advertises enough TmpDisk (sinfo), else dropped with a note; `tmp`: always
         * --tmp (Slurm refuses jobs no node can satisfy); `ignore`: never, with a note. Many sites leave
         * TmpDisk at 0, where --tmp makes every job that asks for disk (all of Toil's) unrunnable.
         */
        diskRequests: z.enum(['auto', 'tmp', 'ignore']).default('auto'),
        /** In `auto`, a disk request no node of the partition can satisfy: dropped with a note, or refused (SYSTEM_ERROR). */
        unsatisfiableDisk: z.enum(['drop', 'refuse']).default('drop'),
        /** How long the partitions' TmpDisk figures from sinfo are used before it is asked again. */
        tmpDiskRefreshMs: z.number().int().min(1000).default(300_000),
        /**
         * What a job Slurm preempts for good (not requeued) makes of its task. PREEMPTED suits Sprocket,
         * which resubmits it; Nextflow, Cromwell, Snakemake and py-tes 0.4 clients need SYSTEM_ERROR.
         */
        preempted: z.enum(['PREEMPTED', 'SYSTEM_ERROR']).default('PREEMPTED'),
      })
      .strict()
      .default({}),
    local: z
      .object({
        maxConcurrentTasks: z.number().int().positive().default(2),
      })
      .strict()
      .default({}),
    storage: z
      .object({
        /**
         * Host folders that `file://` URLs and bare paths may name, for inputs and outputs. An entry is
         * a path (read-only: its inputs are bound read-only) or `{ path: /shared/projects, writable:
         * true }`, whose inputs are bound read-write in place, so executors write the client's folder
         * itself (Toil's file job store, a work directory on the shared filesystem). Any task may then
         * change anything in it: mark writable only folders that the clients' tasks may all write.
         * `writable` defaults to false. service-info lists every root as a `file://` prefix in `storage`.
         */
        allowedRoots: z.array(allowedRoot).default([]),
        /** Bytes all of one task's http and s3 inputs may download together (1 TiB). */
        maxTaskDownloadBytes: z
          .number()
          .int()
          .positive()
          .default(1024 ** 4),
        /** Downloads of one task's inputs running at once. */
        parallelDownloads: z.number().int().positive().default(8),
        http: z
          .object({
            maxBytes: z
              .number()
              .int()
              .positive()
              .default(100 * 1024 ** 3),
            timeoutMs: z
              .number()
              .int()
              .positive()
              .default(6 * 3600 * 1000),
            stallTimeoutMs: z.number().int().positive().default(120_000),
            attempts: z.number().int().positive().default(4),
            backoffMs: z.number().int().min(0).default(1000),
            /**
             * Networks (`10.1.0.0/16`, `fd00::/8`, single addresses) and host names (`data.example.org`,
             * `*.example.org`) that inputs may download from although they are loopback, link-local or
             * private: for sites whose data servers are on such networks. Everything else private is refused.
             */
            allowedPrivateNetworks: z
              .array(
                z.string().superRefine((text, ctx) => {
                  const entry = parseNetworkEntry(text);
                  if (typeof entry === 'string')
                    ctx.addIssue({ code: z.ZodIssueCode.custom, message: entry });
                }),
              )
              .default([]),
          })
          .strict()
          .default({}),
        s3: z
          .object({
            endpoint: z.string().url().optional(),
            region: z.string().min(1).default('us-east-1'),
            forcePathStyle: z.boolean().default(false),
            accessKeyId: z.string().min(1).optional(),
            secretAccessKey: z.string().min(1).optional(),
            maxAttempts: z.number().int().positive().default(4),
            /** Objects one task's DIRECTORY inputs may list, together; listing stops past it. */
            maxListedObjects: z.number().int().positive().default(100_000),
          })
          .strict()
          .refine((s) => (s.accessKeyId === undefined) === (s.secretAccessKey === undefined), {
            message: 'set accessKeyId and secretAccessKey together, or neither for the AWS default chain',
          })
          .default({}),
      })
      .strict()
      .default({}),
    /**
     * Who is asking. `none` (the default) serves anyone who reaches the port; `tokens`, `oidc` and
     * `tokens+oidc` need credentials on every endpoint but service-info.
     */
    auth: z
      .object({
        mode: z.enum(AUTH_MODES).default('none'),
        /** The realm named in WWW-Authenticate. */
        realm: z
          .string()
          .min(1)
          .regex(/^[^"\\\x00-\x1f]+$/, 'must not hold quotes, backslashes or control characters')
          .default('tes-gateway'),
        /**
         * The query parameter and header an API key may come in (Nextflow's tes.apiKeyParamName, sent
         * as a query parameter by default). The key is a personal access token.
         */
        apiKeyParamName: z
          .string()
          .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1 to 64 letters, digits, _ or -')
          .default('apiKey'),
        tokens: z
          .object({
            /** How long a verified token is trusted without asking Redis: revocation takes this long. */
            cacheTtlMs: z.number().int().min(0).max(60_000).default(5_000),
            /** Lifetime of a token created without --expires. */
            defaultLifetime: duration.default('90d'),
            /** The longest lifetime `token create --expires` may give. */
            maxLifetime: duration.default('365d'),
          })
          .strict()
          .default({}),
        oidc: z
          .object({
            /** The issuer; its /.well-known/openid-configuration names the keys (jwks_uri). */
            issuer: z.string().url(),
            /** The audience (`aud`) a token must carry: this gateway's client id at the provider. */
            audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
            /** The claim that names the user. */
            userClaim: z.string().min(1).default('preferred_username'),
            /**
             * A regular expression the claim must match; its first capture group (or the whole match)
             * is the user name: `^([a-z0-9_-]+)@example\\.org$` maps an e-mail address.
             */
            userPattern: z
              .string()
              .min(1)
              .superRefine((text, ctx) => {
                try {
                  new RegExp(text, 'u');
                } catch (err) {
                  ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message });
                }
              })
              .optional(),
            /** The claim listing the user's groups (admin groups and policy groups match it). */
            groupsClaim: z.string().min(1).default('groups'),
            /** Signature algorithms accepted; symmetric ones and `none` never are. */
            algorithms: z
              .array(
                z.enum([
                  'RS256',
                  'RS384',
                  'RS512',
                  'PS256',
                  'PS384',
                  'PS512',
                  'ES256',
                  'ES384',
                  'ES512',
                  'EdDSA',
                ]),
              )
              .min(1)
              .default(['RS256', 'PS256', 'ES256', 'EdDSA']),
            clockToleranceSec: z.number().int().min(0).max(300).default(30),
            /** How long fetched keys are used before they are fetched again. */
            jwksCacheMaxAgeMs: z.number().int().min(1000).default(600_000),
            /** The least time between two fetches of the keys (a token with an unknown key id triggers one). */
            jwksCooldownMs: z.number().int().min(0).default(30_000),
            /** Time allowed for each request to the provider. */
            timeoutMs: z.number().int().positive().default(5_000),
          })
          .strict()
          .optional(),
      })
      .strict()
      .superRefine((auth, ctx) => {
        if (auth.mode.includes('oidc') && !auth.oidc) {
          ctx.addIssue({
            code: z.ZodIssueCode.custom,
            path: ['oidc'],
            message: `auth.mode ${auth.mode} needs auth.oidc (issuer and audience)`,
          });
        }
      })
      .default({}),
    /** What identities may be, who administers, and what each user may use. */
    identity: z
      .object({
        /**
         * Whose Unix rights a task's job runs with: `service`, the gateway's own account; `user`, the
         * task owner's, through the root-owned helper (libexec/tes-gateway-helper) run with sudo. See
         * docs/security.md.
         */
        runAs: z.enum(['service', 'user']).default('service'),
        /** How the gateway reaches the helper in `runAs: user` mode. */
        helper: z
          .object({
            /** The installed helper, as the sudoers rule names it. */
            path: z
              .string()
              .startsWith('/', 'must be an absolute path')
              .default('/usr/libexec/tes-gateway/tes-gateway-helper'),
            sudo: z.string().startsWith('/', 'must be an absolute path').default('/usr/bin/sudo'),
            /** Time allowed for one helper call (a prepare copies the task's staged inputs). */
            timeoutMs: z.number().int().positive().default(300_000),
            /** Helper calls running at once. */
            maxConcurrentCalls: z.number().int().min(1).default(16),
          })
          .strict()
          .default({}),
        /** User names no identity may map to (root and system accounts by default). */
        denyUsers: z.array(z.string().min(1)).default(DEFAULT_DENIED_USERS),
        /** Who sees and cancels every task: user names, or groups (OIDC groups or policy groups). */
        admins: z
          .object({
            users: z.array(z.string().min(1)).default([]),
            groups: z.array(z.string().min(1)).default([]),
          })
          .strict()
          .default({}),
        policy: z
          .object({
            /** What applies to every user. */
            everyone: policyEntry.default({}),
            /**
             * Groups by name: their members (also users whose OIDC groups claim names the group) get
             * its entry; `{group}` in its roots is the group's name.
             */
            groups: z
              .record(
                z.string().regex(/^[A-Za-z0-9_.-]+$/, 'group names hold letters, digits, _ . -'),
                policyEntry.extend({ members: z.array(z.string().min(1)).default([]) }).strict(),
              )
              .default({}),
            /** Users by name. */
            users: z.record(z.string().min(1), policyEntry).default({}),
          })
          .strict()
          .default({}),
      })
      .strict()
      .default({}),
    security: z
      .object({
        /**
         * Lets a gateway with the slurm backend run as root. Job scripts and output delivery run with
         * the gateway's rights, so as root a mistake in either reaches the whole host; run as a service
         * account instead, and set this only where that is impossible (a disposable test machine).
         */
        allowRoot: z.boolean().default(false),
      })
      .strict()
      .default({}),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
