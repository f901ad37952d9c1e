import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The server serves the built page at /examples/ai-sdk/ (app/routers/page.py); `npm run dev`
// proxies the API to a server on port 8000 (`make run`).
export default defineConfig({
  base: '/examples/ai-sdk/',
  plugins: [react()],
  server: {
    proxy: {
      '/api': { target: 'http://127.0.0.1:8000', ws: true },
    },
  },
});
