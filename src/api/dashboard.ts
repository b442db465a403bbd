import express, { type Router } from 'express';

/** Where the dashboard is served: outside the TES base paths, so neither the validator nor auth sees it. */
export const DASHBOARD_PATH = '/ui';

/**
 * Its files allow nothing but themselves: no inline script or style, no other origin, no framing.
 * The data it shows comes from the TES API, which checks the token the page sends.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "object-src 'none'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * The read-only dashboard: static files from `dir` (index.html, one stylesheet, ES modules), public,
 * each revalidated on use (`no-cache` with Last-Modified and ETag) since their names carry no version.
 * A path it does not hold is a plain 404 here, never passed on to the API's authentication.
 */
export function dashboard(dir: string): Router {
  const router = express.Router();
  router.use((req, res, next) => {
    res.set({
      'Content-Security-Policy': CONTENT_SECURITY_POLICY,
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      'X-Frame-Options': 'DENY',
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Resource-Policy': 'same-origin',
    });
    // The page's relative links need the trailing slash: `/ui` would resolve them against `/`. The
    // redirect is relative too, so that it keeps a path prefix a proxy put in front.
    const query = req.originalUrl.indexOf('?');
    const path = query < 0 ? req.originalUrl : req.originalUrl.slice(0, query);
    if (req.path === '/' && !path.endsWith('/')) {
      res.redirect(
        301,
        `${path.slice(path.lastIndexOf('/') + 1)}/${query < 0 ? '' : req.originalUrl.slice(query)}`,
      );
      return;
    }
    next();
  });
  router.use(
    express.static(dir, {
      index: 'index.html',
      dotfiles: 'ignore',
      etag: true,
      lastModified: true,
      setHeaders: (res) => res.setHeader('Cache-Control', 'no-cache'),
    }),
  );
  router.use((req, res) => {
    res.type('text/plain').set('Cache-Control', 'no-store');
    if (req.method === 'GET' || req.method === 'HEAD') res.status(404).send('not found\n');
    else res.status(405).set('Allow', 'GET, HEAD').send('the dashboard is read-only\n');
  });
  return router;
}
