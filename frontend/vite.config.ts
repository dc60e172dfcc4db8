/// <reference types="vitest/config" />
// Vite builds the dashboard into dist/, which `cairn api` serves at `/`.
//
// JSX is compiled by esbuild's automatic runtime (no @vitejs/plugin-react: it does not
// install on this Node 20 toolchain, and Fast Refresh is not needed to ship).
// In development `/api` is proxied to a running Cairn (CAIRN_API_URL, default
// http://127.0.0.1:8080), so the app always calls its own origin, as in production.
import { defineConfig } from 'vite';

const api = process.env.CAIRN_API_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  esbuild: { jsx: 'automatic' },
  server: {
    port: 5173,
    proxy: {
      '/api': { target: api, changeOrigin: false },
    },
  },
  build: {
    outDir: 'dist',
    // Served builds carry no source maps; CAIRN_SOURCEMAP=1 writes them for debugging.
    sourcemap: process.env.CAIRN_SOURCEMAP === '1',
    target: 'es2022',
    rollupOptions: {
      onwarn(warning, warn) {
        // React Query marks modules "use client" (for React Server Components), which a
        // client-only bundle ignores; Rollup's notice about it is noise.
        if (warning.code === 'MODULE_LEVEL_DIRECTIVE') return;
        if (warning.code === 'SOURCEMAP_ERROR' && warning.message.includes("Can't resolve original location")) return;
        warn(warning);
      },
    },
  },
  test: {
    environment: 'jsdom',
    globals: true,
    setupFiles: ['./test/setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
    css: false,
    restoreMocks: true,
    unstubGlobals: true,
  },
});
