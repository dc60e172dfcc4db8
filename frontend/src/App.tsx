// Routes: Sign in is public; everything else needs a session and sits in the shell.
import { QueryClientProvider, type QueryClient } from '@tanstack/react-query';
import type { ReactNode } from 'react';
import { Route, Routes } from 'react-router';
import { RequireAuth, UnauthorizedListener } from './auth/auth';
import { AppShell } from './components/AppShell';
import { DeadLetterPage } from './pages/DeadLetterPage';
import { DeadLettersPage } from './pages/DeadLettersPage';
import { NotFoundPage } from './pages/NotFoundPage';
import { NotificationsPage } from './pages/NotificationsPage';
import { OverviewPage } from './pages/OverviewPage';
import { ProjectPage } from './pages/ProjectPage';
import { ProjectsPage } from './pages/ProjectsPage';
import { RunPage } from './pages/RunPage';
import { RunsPage } from './pages/RunsPage';
import { SchedulesPage } from './pages/SchedulesPage';
import { SignInPage } from './pages/SignInPage';
import { TokensPage } from './pages/TokensPage';
import { UsagePage } from './pages/UsagePage';
import { UsersPage } from './pages/UsersPage';
import { WorkersPage } from './pages/WorkersPage';
import { WorkflowPage } from './pages/WorkflowPage';
import { WorkflowsPage } from './pages/WorkflowsPage';
import { ToastProvider } from './ui';

/** The app's routes; inside a router (toasts may hold links, so they live here too). */
export function AppRoutes() {
  return (
    <ToastProvider>
      <Routes>
        <Route path="/signin" element={<SignInPage />} />
        <Route element={<RequireAuth />}>
          <Route element={<AppShell />}>
            <Route index element={<OverviewPage />} />
            <Route path="projects" element={<ProjectsPage />} />
            <Route path="projects/:id" element={<ProjectPage />} />
            <Route path="runs" element={<RunsPage />} />
            <Route path="runs/:id" element={<RunPage />} />
            <Route path="dead-letters" element={<DeadLettersPage />} />
            <Route path="dead-letters/:id" element={<DeadLetterPage />} />
            <Route path="notifications" element={<NotificationsPage />} />
            <Route path="schedules" element={<SchedulesPage />} />
            <Route path="workflows" element={<WorkflowsPage />} />
            <Route path="workflows/:name" element={<WorkflowPage />} />
            <Route path="workers" element={<WorkersPage />} />
            <Route path="tokens" element={<TokensPage />} />
            <Route path="users" element={<UsersPage />} />
            <Route path="usage" element={<UsagePage />} />
            <Route path="*" element={<NotFoundPage />} />
          </Route>
        </Route>
      </Routes>
    </ToastProvider>
  );
}

/** Everything but the router, so tests can wrap the app in a MemoryRouter. */
export function AppProviders({ client, children }: { client: QueryClient; children: ReactNode }) {
  return (
    <QueryClientProvider client={client}>
      <UnauthorizedListener />
      {children}
    </QueryClientProvider>
  );
}
