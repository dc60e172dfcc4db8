import { Link } from 'react-router';
import { useTitle } from '../lib/useTitle';
import { EmptyState, PageHeader } from '../ui';

export function NotFoundPage() {
  useTitle('Not found');
  return (
    <>
      <PageHeader title="Page not found" />
      <EmptyState title="There is nothing at this address." action={<Link to="/">Go to the overview</Link>} />
    </>
  );
}
