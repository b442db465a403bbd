import { z } from 'zod';

/**
 * The one description of the gateway's configuration. Every object is strict: an unknown key is a
 * mistake (a typo would otherwise silently fall back to a default), so it fails the start.
 */

const partitionLimits = z
  .object({
    maxCpus: z.number().int().positive().optional(),
    maxMemoryMiB: z.number().int().positive().optional(),
  })
  .strict();

export const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().min(1).default('0.0.0.0'),
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
        /** Processes serving the API on one port (`tes-gateway api` only): reads scale with cores. */
        processes: z.number().int().positive().max(64).default(1),
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
    redis: z
      .object({
        url: z.string().url().default('redis://127.0.0.1:6379'),
        prefix: z
          .string()
          .min(1)
          .regex(/^[A-Za-z0-9_.:-]+$/, 'may hold only letters, digits and _ . : -')
          .default('tesgw:'),
      })
      .strict()
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
      })
      .strict()
      .default({}),
    worker: z
      .object({
        // Submissions mostly wait (files, Redis, sbatch); sbatch itself is capped by slurm.maxConcurrentCalls.
        submitConcurrency: z.number().int().positive().default(64),
        finalizeConcurrency: z.number().int().positive().default(32),
        // Exponential backoff: 8 attempts from 5 s ride out about 10 minutes of controller trouble.
        submitAttempts: z.number().int().positive().default(8),
        submitBackoffMs: z.number().int().positive().default(5000),
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
    slurm: z
      .object({
        binDir: z.string().optional(),
        defaultPartition: z.string().min(1).optional(),
        shortPartition: z.string().min(1).optional(),
        shortMaxMinutes: z.number().int().positive().default(60),
        gpuPartition: z.string().min(1).optional(),
        preemptiblePartition: z.string().min(1).optional(),
        zonePartitions: z.boolean().default(true),
        limits: z.record(z.string(), partitionLimits).default({}),
        overLimit: z.enum(['clamp', 'refuse']).default('refuse'),
        extraArgs: z.array(z.string()).default([]),
        maxConcurrentCalls: z.number().int().positive().default(4),
        commandTimeoutMs: z.number().int().positive().default(30000),
        sacctChunkSize: z.number().int().min(1).max(15000).default(5000),
        // Submissions with the same request arriving within this window go as one job array (0: never).
        arrayWindowMs: z.number().int().min(0).default(25),
        maxArraySize: z.number().int().min(2).max(10_000).default(1000),
        missingGraceMs: z.number().int().min(0).default(120000),
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
        allowedRoots: z.array(z.string().startsWith('/', 'must be an absolute path')).default([]),
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
          })
          .strict()
          .refine((s) => (s.accessKeyId === undefined) === (s.secretAccessKey === undefined), {
            message: 'set accessKeyId and secretAccessKey together, or neither for the AWS default chain',
          })
          .default({}),
      })
      .strict()
      .default({}),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
