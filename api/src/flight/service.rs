//! The Flight service of the port: the plain dataset API and Flight SQL side by side.
//!
//! arrow-flight's blanket `FlightService` implementation for a `FlightSqlService` decodes
//! every ticket and command descriptor as a protobuf `Any` before its fallback hooks run, so
//! a JSON ticket never reaches `do_get_fallback`, and its `list_flights` and `get_schema`
//! cannot be overridden. This service therefore routes first: JSON tickets, path
//! descriptors and JSON command descriptors go to the dataset API, and every other call goes
//! to [`SqlService`] through the blanket implementation.

use std::pin::Pin;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, Any, Command,
    CommandStatementQuery, ProstMessageExt,
};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::auth::ApiKeys;
use super::error::{RequestError, RequestResult};
use super::sql::{DoGetStream, SqlService, stream_batches, stream_frame};
use super::tickets::{self, DatasetSeries, JsonTicket};
use super::{backtests, datasets};
use crate::AppState;
use crate::error::echoed;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The tickets that `DoGet` accepts, listed in the message of a rejected ticket.
const TICKET_KINDS: &str = "expected a JSON dataset ticket such as {\"dataset\": \"klines\", \
     \"symbol\": \"BTCUSDT\", \"timeframe\": \"1\"} or {\"dataset\": \"ticks\", \"symbol\": \
     \"BTCUSDT\"}, a JSON backtest ticket such as {\"backtest_id\": 1, \"table\": \"trades\"}, \
     or the ticket of an endpoint that GetFlightInfo returned for a Flight SQL command";

/// The descriptors that `GetFlightInfo` accepts, listed in the message of a rejected
/// descriptor.
const DESCRIPTOR_KINDS: &str = "expected a PATH descriptor such as [\"klines\", \"linear\", \
     \"BTCUSDT\", \"1\"] or [\"ticks\", \"linear\", \"BTCUSDT\"], a CMD descriptor with a JSON \
     ticket such as {\"backtest_id\": 1, \"table\": \"trades\"}, or a CMD descriptor with a Flight \
     SQL command such as CommandStatementQuery";

/// The `DoPut` calls that the server accepts, listed in the message of a rejected one.
pub(crate) const PUT_KINDS: &str = "expected a CMD descriptor with the Flight SQL command \
     CommandPreparedStatementQuery, to bind the parameters of a prepared statement; the server \
     is read-only, so update and ingest commands are rejected";

/// The actions that `DoAction` runs, listed in the message of a rejected one.
const ACTION_KINDS: &str = "the server runs the Flight SQL actions \
     CreatePreparedStatement and ClosePreparedStatement";

/// Decodes a protobuf ticket or command as a Flight SQL command, or `None` when it is not
/// one.
fn sql_command(bytes: &[u8]) -> Option<Command> {
    Any::decode(bytes)
        .ok()
        .and_then(|any| Command::try_from(any).ok())
}

/// Returns true for the Flight SQL catalog commands, which serve as both a descriptor and a
/// ticket.
fn is_catalog_command(command: &Command) -> bool {
    matches!(
        command,
        Command::CommandGetCatalogs(_)
            | Command::CommandGetDbSchemas(_)
            | Command::CommandGetTables(_)
            | Command::CommandGetTableTypes(_)
            | Command::CommandGetSqlInfo(_)
            | Command::CommandGetPrimaryKeys(_)
            | Command::CommandGetExportedKeys(_)
            | Command::CommandGetImportedKeys(_)
            | Command::CommandGetCrossReference(_)
            | Command::CommandGetXdbcTypeInfo(_)
    )
}

/// Checks that a ticket that is not JSON is a Flight SQL ticket that `DoGet` serves, so that
/// other bytes get a message in user terms instead of a protobuf decoder's error.
fn check_sql_ticket(bytes: &[u8]) -> RequestResult<()> {
    match sql_command(bytes) {
        Some(Command::TicketStatementQuery(_) | Command::CommandPreparedStatementQuery(_)) => {
            Ok(())
        }
        Some(command) if is_catalog_command(&command) => Ok(()),
        _ => Err(RequestError::InvalidArgument(format!(
            "invalid ticket: {TICKET_KINDS}"
        ))),
    }
}

/// Checks that a CMD descriptor that is not JSON is a Flight SQL command that
/// `GetFlightInfo` serves.
fn check_sql_descriptor(bytes: &[u8]) -> RequestResult<()> {
    match sql_command(bytes) {
        Some(
            Command::CommandStatementQuery(_)
            | Command::CommandPreparedStatementQuery(_)
            | Command::CommandStatementSubstraitPlan(_),
        ) => Ok(()),
        Some(command) if is_catalog_command(&command) => Ok(()),
        _ => Err(RequestError::InvalidArgument(format!(
            "invalid descriptor: {DESCRIPTOR_KINDS}"
        ))),
    }
}

/// Returns true when `body` is a protobuf `Any` that contains a message of type `M`.
fn contains_message<M: ProstMessageExt>(body: &[u8]) -> bool {
    Any::decode(body)
        .ok()
        .and_then(|any| any.unpack::<M>().ok().flatten())
        .is_some()
}

/// Flight SQL actions that arrow-flight lists but this server does not run.
const UNSUPPORTED_SQL_ACTIONS: [&str; 6] = [
    "CreatePreparedSubstraitPlan",
    "BeginTransaction",
    "EndTransaction",
    "BeginSavepoint",
    "EndSavepoint",
    "CancelQuery",
];

/// Checks an action before arrow-flight decodes it, so that an action type the server does
/// not run, or a body that is not the action's message, gets a message in user terms instead
/// of a decoder's error.
fn check_sql_action(action: &Action) -> Result<(), Status> {
    let action_type = action.r#type.as_str();
    let (message, valid) = match action_type {
        "CreatePreparedStatement" => (
            "ActionCreatePreparedStatementRequest",
            contains_message::<ActionCreatePreparedStatementRequest>(&action.body),
        ),
        "ClosePreparedStatement" => (
            "ActionClosePreparedStatementRequest",
            contains_message::<ActionClosePreparedStatementRequest>(&action.body),
        ),
        _ if UNSUPPORTED_SQL_ACTIONS.contains(&action_type) => {
            return Err(Status::unimplemented(format!(
                "action {action_type} is not supported: {ACTION_KINDS}"
            )));
        }
        _ => {
            return Err(RequestError::InvalidArgument(format!(
                "unknown action {}: {ACTION_KINDS}",
                echoed(action_type)
            ))
            .into());
        }
    };
    if valid {
        return Ok(());
    }
    Err(RequestError::InvalidArgument(format!(
        "invalid body of action {action_type}: expected a protobuf Any that contains an {message}"
    ))
    .into())
}

/// Returns the actions that [`check_sql_action`] lets through.
fn action_types() -> Vec<ActionType> {
    vec![
        ActionType {
            r#type: "CreatePreparedStatement".to_string(),
            description: "Creates a prepared statement from a read-only SQL query. Request: \
                ActionCreatePreparedStatementRequest. Response: \
                ActionCreatePreparedStatementResult."
                .to_string(),
        },
        ActionType {
            r#type: "ClosePreparedStatement".to_string(),
            description: "Closes a prepared statement. Request: \
                ActionClosePreparedStatementRequest. Response: none."
                .to_string(),
        },
    ]
}

/// Replaces prost's decode error, which arrow-flight returns when a `DoPut` descriptor command
/// is not a protobuf `Any`, with a message that lists the accepted calls. It recognizes that
/// error by its text, which `flight_e2e` checks. Other statuses pass unchanged.
fn put_status(status: Status) -> Status {
    if status.code() == tonic::Code::InvalidArgument && status.message().starts_with("DecodeError")
    {
        return RequestError::InvalidArgument(format!("invalid DoPut descriptor: {PUT_KINDS}"))
            .into();
    }
    status
}

/// The Flight service: datasets and backtest results by JSON ticket, and Flight SQL.
#[derive(Debug, Clone)]
pub struct BstFlightService {
    state: AppState,
    sql: SqlService,
    keys: Option<ApiKeys>,
}

impl BstFlightService {
    /// Creates the service over the server's state. With `keys`, `Handshake` requires one of
    /// them; the bearer check of the other calls is the interceptor's.
    pub fn new(state: AppState, keys: Option<ApiKeys>) -> Self {
        let sql = SqlService::new(state.engine.session().clone());
        Self { state, sql, keys }
    }

    async fn json_schema(&self, bytes: &[u8]) -> RequestResult<SchemaRef> {
        match tickets::parse_ticket(bytes)? {
            JsonTicket::Dataset(request) => {
                let frame = tickets::dataset_frame(
                    self.state.engine.session(),
                    self.state.engine.data_dir(),
                    &request,
                )
                .await?;
                Ok(tickets::frame_schema(&frame))
            }
            JsonTicket::Backtest(request) => {
                // Counting the rows checks that the backtest exists.
                backtests::count_rows(&self.state, request).await?;
                Ok(backtests::schema(request.table))
            }
        }
    }

    async fn json_do_get(&self, bytes: &[u8]) -> RequestResult<DoGetStream> {
        match tickets::parse_ticket(bytes)? {
            JsonTicket::Dataset(request) => {
                let frame = tickets::dataset_frame(
                    self.state.engine.session(),
                    self.state.engine.data_dir(),
                    &request,
                )
                .await?;
                tracing::debug!(series = ?request.series.path(), "flight dataset read");
                stream_frame(frame).await
            }
            JsonTicket::Backtest(request) => {
                let batches = backtests::read_batches(&self.state, request).await?;
                Ok(stream_batches(backtests::schema(request.table), batches))
            }
        }
    }

    async fn descriptor_schema(&self, descriptor: &FlightDescriptor) -> RequestResult<SchemaRef> {
        if descriptor.r#type() == DescriptorType::Path {
            let series = DatasetSeries::from_path(&descriptor.path)?;
            let info = datasets::series_info(
                self.state.engine.session(),
                self.state.engine.data_dir(),
                &series,
            )
            .await?;
            let schema = info
                .try_decode_schema()
                .map_err(|error| RequestError::internal("schema decoding", error))?;
            return Ok(std::sync::Arc::new(schema));
        }
        if tickets::is_json_ticket(&descriptor.cmd) {
            return self.json_schema(&descriptor.cmd).await;
        }
        match sql_command(&descriptor.cmd) {
            Some(Command::CommandStatementQuery(CommandStatementQuery { query, .. })) => {
                let frame = self.sql.plan(&query).await?;
                Ok(std::sync::Arc::new(frame.schema().as_arrow().clone()))
            }
            _ => Err(RequestError::InvalidArgument(
                "invalid descriptor for GetSchema: expected a dataset path, a JSON ticket or \
                 a Flight SQL CommandStatementQuery"
                    .to_string(),
            )),
        }
    }
}

fn schema_result(schema: &Schema) -> Result<SchemaResult, Status> {
    SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|error| Status::from(RequestError::internal("schema encoding", error)))
}

#[tonic::async_trait]
impl FlightService for BstFlightService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = DoGetStream;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let metadata = request.metadata().clone();
        let mut messages = request.into_inner();
        let first = messages.next().await.transpose()?.unwrap_or_default();
        let Some(keys) = &self.keys else {
            let reply = HandshakeResponse {
                protocol_version: first.protocol_version,
                payload: Default::default(),
            };
            let stream = futures::stream::iter([Ok(reply)]);
            return Ok(Response::new(Box::pin(stream)));
        };
        let Some(key) = keys.handshake_key(&metadata, &first.payload) else {
            return Err(Status::unauthenticated(
                "handshake failed: send an API key as the Basic auth password or as the \
                 handshake payload",
            ));
        };
        let bearer = format!("Bearer {}", String::from_utf8_lossy(&key));
        let header = MetadataValue::try_from(bearer.as_str())
            .map_err(|_| Status::unauthenticated("the API key is not a valid header value"))?;
        let reply = HandshakeResponse {
            protocol_version: first.protocol_version,
            payload: key.into(),
        };
        let mut response =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])) as Self::HandshakeStream);
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos =
            datasets::list(self.state.engine.session(), self.state.engine.data_dir()).await?;
        let stream = futures::stream::iter(infos.into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.get_ref();
        if descriptor.r#type() == DescriptorType::Path {
            let series = DatasetSeries::from_path(&descriptor.path)?;
            let info = datasets::series_info(
                self.state.engine.session(),
                self.state.engine.data_dir(),
                &series,
            )
            .await?;
            return Ok(Response::new(info));
        }
        if tickets::is_json_ticket(&descriptor.cmd) {
            let schema = self.json_schema(&descriptor.cmd).await?;
            let ticket = Ticket::new(descriptor.cmd.clone());
            let info = FlightInfo::new()
                .try_with_schema(&schema)
                .map_err(|error| Status::from(RequestError::internal("schema encoding", error)))?
                .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                .with_descriptor(descriptor.clone())
                .with_ordered(true);
            return Ok(Response::new(info));
        }
        check_sql_descriptor(&descriptor.cmd)?;
        FlightService::get_flight_info(&self.sql, request).await
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "PollFlightInfo is not supported; use GetFlightInfo",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let schema = self.descriptor_schema(request.get_ref()).await?;
        Ok(Response::new(schema_result(&schema)?))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = &request.get_ref().ticket;
        if tickets::is_json_ticket(ticket) {
            return Ok(Response::new(self.json_do_get(ticket).await?));
        }
        check_sql_ticket(ticket)?;
        FlightService::do_get(&self.sql, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.sql, request)
            .await
            .map_err(put_status)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        check_sql_action(request.get_ref())?;
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let stream = futures::stream::iter(action_types().into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.sql, request).await
    }
}
