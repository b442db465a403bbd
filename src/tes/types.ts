import type { components } from '../api/generated/tes.js';
import type { TesState } from './state.js';

/** TES wire types, generated from spec/tes.openapi.yaml; the rest of the code names them from here. */
type Schemas = components['schemas'];
export type TesTask = Schemas['tesTask'];
export type TesInput = Schemas['tesInput'];
export type TesOutput = Schemas['tesOutput'];
export type TesExecutor = Schemas['tesExecutor'];
export type TesResources = Schemas['tesResources'];
export type TesTaskLog = Schemas['tesTaskLog'];
export type TesExecutorLog = Schemas['tesExecutorLog'];
export type TesOutputFileLog = Schemas['tesOutputFileLog'];
export type TesFileType = Schemas['tesFileType'];
export type TesServiceInfo = Schemas['tesServiceInfo'];
export type TesView = 'MINIMAL' | 'BASIC' | 'FULL';

/** What a client asked for, normalized and validated: the task without its read-only fields. */
export type TaskRequest = Omit<TesTask, 'id' | 'state' | 'logs' | 'creation_time'>;

/** What the gateway knows of a task's run on the cluster; never shown to clients as such. */
export interface RunInfo {
  /** Cluster job id (`123`, or `123_4` for an array task). */
  jobId?: string;
  /**
   * The job's name in accounting (compute/driver.ts SubmittedJob): the reconciler takes a record as the
   * task's job only under this name. Absent for a launcher without names, and for a task an older
   * gateway submitted (its submit marker tells then).
   */
  jobName?: string;
  /** Task directory on the shared filesystem. */
  workDir?: string;
  submittedAt?: string;
  /** When the job was first seen gone from the scheduler without an end record. */
  missingSince?: string;
  /** Set once the task's outcome is being written, so the reconciler enqueues finalization once. */
  finalizing?: boolean;
}

/**
 * Who created a task, when the gateway authenticates: the user it belongs to, and the groups its
 * credentials carried then (the worker applies the same per-user policy as the API did at creation).
 */
export interface TaskOwner {
  user: string;
  groups?: string[];
}

/** The tag under which BASIC and FULL views show a task's owner; clients cannot set it. */
export const OWNER_TAG = 'tes-gateway/owner';

export interface TaskRecord {
  id: string;
  state: TesState;
  owner?: TaskOwner;
  request: TaskRequest;
  creationTime: string;
  logs?: TesTaskLog[];
  run?: RunInfo;
}
