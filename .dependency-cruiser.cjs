// The layers STYLE.md describes, checked by `npm run lint` (which `npm test` runs). A rule here is a
// decision: change it in review, not to silence a finding.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      comment: 'Import cycles break module initialisation order at run time (seen twice after merges).',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true, dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'sql-only-in-db',
      comment: 'Only src/db writes SQL: drizzle, better-sqlite3 and pg are imported nowhere else.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/db/' },
      to: { path: '(^|/)node_modules/(drizzle-orm|better-sqlite3|pg)/' },
    },
    {
      name: 'media-tools-only-in-media',
      comment: 'Only src/media runs sharp, ffmpeg and music-metadata on user bytes (bounded children).',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/media/' },
      to: { path: '(^|/)node_modules/(sharp|music-metadata|ffmpeg-static|@ffmpeg-installer)/' },
    },
    {
      name: 's3-only-in-storage',
      comment: 'Only src/storage talks to object storage.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/storage/' },
      to: { path: '(^|/)node_modules/@aws-sdk/' },
    },
    {
      name: 'routes-call-services',
      comment: 'Routes call services, never the persistence layer directly.',
      severity: 'error',
      from: { path: '^src/routes/' },
      to: { path: '^src/db/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'media-is-self-contained',
      comment: 'Media processors get their limits passed in; they do not read the configuration or the purposes.',
      severity: 'error',
      from: { path: '^src/media/' },
      to: { path: '^src/(config|purposes|db|services|routes|uploads|delivery)', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'db-knows-no-upper-layer',
      comment: 'The persistence layer depends on nothing above it.',
      severity: 'error',
      from: { path: '^src/db/' },
      to: { path: '^src/(services|routes|uploads|delivery|media|jobs|ops)/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'storage-knows-no-upper-layer',
      severity: 'error',
      from: { path: '^src/storage/' },
      to: { path: '^src/(services|routes|uploads|delivery|media|jobs|db)/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-demo-outside-demo',
      comment: 'The demo is optional; the product never depends on it (the composition root may mount it).',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/(demo/|app\\.ts$|chipmunk\\.ts$)' },
      to: { path: '^src/demo/' },
    },
    {
      name: 'no-tests-in-src-imports',
      severity: 'error',
      from: { path: '^src/', pathNot: '\\.test\\.ts$' },
      to: { path: '(^test/|\\.test\\.ts$)' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
      extensions: ['.ts', '.js', '.mjs', '.cjs', '.json'],
    },
  },
};
