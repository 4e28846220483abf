//! The customer commands: getCustomerStats and recomputeCustomerStats (the customer's actor
//! answers, on the customer's partition's owner).

use serde::Deserialize;

use super::{args_schema_of, ArgsSchema, Family};
use crate::actors::customer::{GetStats, Recompute};
use crate::actors::order::RequestMeta;
use crate::admin::reply::{AdminError, Outcome};
use crate::admin::AdminState;
use crate::domain::command::{check_id, parse_args};
use crate::store::Keys;
use crate::wire::Request;

/// A customer command, parsed and validated.
#[derive(Debug)]
pub enum CustomerCommand {
    GetCustomerStats { customer_id: String },
    RecomputeCustomerStats { customer_id: String },
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CustomerArgs {
    customer_id: String,
}

impl CustomerCommand {
    fn parse_named(name: &str, req: &Request) -> Result<Option<Self>, AdminError> {
        let customer = || -> Result<String, AdminError> {
            let a: CustomerArgs = parse_args(&req.args)?;
            check_id("customerId", &a.customer_id)?;
            Ok(a.customer_id)
        };
        Ok(Some(match name {
            "getCustomerStats" => CustomerCommand::GetCustomerStats {
                customer_id: customer()?,
            },
            "recomputeCustomerStats" => CustomerCommand::RecomputeCustomerStats {
                customer_id: customer()?,
            },
            _ => return Ok(None),
        }))
    }

    fn customer_id(&self) -> &str {
        match self {
            CustomerCommand::GetCustomerStats { customer_id }
            | CustomerCommand::RecomputeCustomerStats { customer_id } => customer_id,
        }
    }
}

impl Family for CustomerCommand {
    fn parse(name: &str, req: &Request) -> Option<Result<Self, AdminError>> {
        Self::parse_named(name, req).transpose()
    }

    /// The customer's partition.
    fn routing_partition(&self, keys: &Keys) -> u16 {
        keys.partition(self.customer_id())
    }

    /// getCustomerStats is a read that fires nothing: answered during an advance with what is
    /// committed so far. recomputeCustomerStats waits.
    fn waits_for_advance(&self) -> bool {
        !matches!(self, CustomerCommand::GetCustomerStats { .. })
    }

    async fn run(
        self,
        state: &AdminState,
        _request: RequestMeta,
        _raw: &Request,
    ) -> Result<Outcome, AdminError> {
        match self {
            CustomerCommand::GetCustomerStats { customer_id } => {
                let stats = state.actors.to_customer(&customer_id, GetStats).await??;
                Ok(Outcome::Answer(stats))
            }
            CustomerCommand::RecomputeCustomerStats { customer_id } => {
                let report = state.actors.to_customer(&customer_id, Recompute).await??;
                Ok(Outcome::Answer(report))
            }
        }
    }

    fn args_schema(name: &str) -> Option<ArgsSchema> {
        match name {
            "getCustomerStats" | "recomputeCustomerStats" => Some(args_schema_of::<CustomerArgs>()),
            _ => None,
        }
    }
}
