import type { components } from '../api/generated/tes.js';

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
