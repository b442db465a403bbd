/** The part of autocannon's API the benchmark uses. */
declare module 'autocannon' {
  interface Request {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string;
  }
  interface Options {
    url: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    connections?: number;
    duration?: number;
    requests?: Array<Request & { setupRequest?: (req: Request) => Request }>;
  }
  interface Result {
    requests: { average: number; total: number };
    latency: { p50: number; p99: number; average: number };
    non2xx: number;
    '2xx': number;
    errors: number;
  }
  export default function autocannon(options: Options): Promise<Result>;
}
